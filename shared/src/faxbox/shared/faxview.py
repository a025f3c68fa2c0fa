"""A fax as the outside world sees it: the API's fax object and every webhook's ``data``.

One shape, built two ways: from the history record (``GET /api/v1/faxes/{id}``) and from
the event a webhook tells about (``fax.delivered`` ...), so an API client and a webhook
receiver read the same fields. What an event does not carry is ``None`` in its webhook.

Statuses (stable, documented in docs/api.md):

====================  =================================================  ================
status                meaning                                            webhook event
====================  =================================================  ================
queued                accepted, waiting for a line                       fax.queued
sending               a call is being placed or is on the line           fax.sending
retrying              a call failed; the next one is scheduled           (none)
delivered             every page confirmed by the far end                fax.delivered
partially_delivered   some pages confirmed after the last attempt        fax.failed
failed                no page confirmed after the last attempt           fax.failed
cancelled             cancelled by its sender                            fax.failed
rejected              refused before any call (number, document, limit)  fax.failed
received              an incoming fax arrived whole                      fax.received
receive_failed        an incoming fax broke off (pages that came kept)   fax.receive_failed
====================  =================================================  ================

``failure_reason`` is one of :class:`~faxbox.shared.contracts.FailureReason`;
``retryable`` says whether sending the same fax again later may go through without
changing anything (a busy line: yes; a bad number or an unreadable document: no).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxAttemptStarted,
    FaxFailed,
    FaxFailure,
    FaxMessage,
    FaxSent,
    InboundFaxFailed,
    InboundFaxReceived,
    OutboundFaxRejected,
    OutboundFaxRequested,
    PageReport,
    RejectionCode,
)
from faxbox.shared.store.records import FaxStatus, HistoryRecord


class ApiStatus(StrEnum):
    queued = "queued"
    sending = "sending"
    retrying = "retrying"
    delivered = "delivered"
    partially_delivered = "partially_delivered"
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"
    received = "received"
    receive_failed = "receive_failed"


TERMINAL_STATUSES: Final = frozenset(
    {
        ApiStatus.delivered,
        ApiStatus.partially_delivered,
        ApiStatus.failed,
        ApiStatus.cancelled,
        ApiStatus.rejected,
        ApiStatus.received,
        ApiStatus.receive_failed,
    }
)

WEBHOOK_EVENTS: Final = (
    "fax.queued",
    "fax.sending",
    "fax.delivered",
    "fax.failed",
    "fax.received",
    "fax.receive_failed",
)

_EVENT_OF_STATUS: Final[dict[ApiStatus, str]] = {
    ApiStatus.queued: "fax.queued",
    ApiStatus.sending: "fax.sending",
    ApiStatus.delivered: "fax.delivered",
    ApiStatus.partially_delivered: "fax.failed",
    ApiStatus.failed: "fax.failed",
    ApiStatus.cancelled: "fax.failed",
    ApiStatus.rejected: "fax.failed",
    ApiStatus.received: "fax.received",
    ApiStatus.receive_failed: "fax.receive_failed",
}

_STATUS_OF_HISTORY: Final[dict[FaxStatus, ApiStatus]] = {
    FaxStatus.requested: ApiStatus.queued,
    FaxStatus.sending: ApiStatus.sending,
    FaxStatus.retrying: ApiStatus.retrying,
    FaxStatus.sent: ApiStatus.delivered,
    FaxStatus.partially_sent: ApiStatus.partially_delivered,
    FaxStatus.failed: ApiStatus.failed,
    FaxStatus.cancelled: ApiStatus.cancelled,
    FaxStatus.rejected: ApiStatus.rejected,
    FaxStatus.received: ApiStatus.received,
    FaxStatus.receive_failed: ApiStatus.receive_failed,
}

_R = FailureReason
_REJECTION_REASONS: Final[dict[RejectionCode, FailureReason]] = {
    RejectionCode.invalid_number: _R.invalid_number,
    RejectionCode.blocked_number: _R.number_blocked,
    RejectionCode.country_not_allowed: _R.country_not_allowed,
    RejectionCode.no_attachment: _R.no_document,
    RejectionCode.too_many_attachments: _R.too_many_documents,
    RejectionCode.empty_attachment: _R.document_unreadable,
    RejectionCode.attachment_too_large: _R.document_too_large,
    RejectionCode.encrypted_pdf: _R.document_encrypted,
    RejectionCode.unreadable_document: _R.document_unreadable,
    RejectionCode.unsupported_document: _R.document_unreadable,
    RejectionCode.rendering_failed: _R.document_unreadable,
    RejectionCode.rendering_timeout: _R.document_unreadable,
    RejectionCode.too_many_pages: _R.too_many_pages,
    RejectionCode.page_too_large: _R.page_too_large,
    RejectionCode.faxbox_disabled: _R.faxbox_disabled,
    RejectionCode.unauthenticated_sender: _R.sender_not_authenticated,
    RejectionCode.daily_page_limit: _R.daily_page_limit,
    RejectionCode.too_many_recipients: _R.too_many_recipients,
    RejectionCode.mail_too_large: _R.email_unreadable,
    RejectionCode.headers_too_large: _R.email_unreadable,
    RejectionCode.too_many_addresses: _R.email_unreadable,
    RejectionCode.too_many_parts: _R.email_unreadable,
    RejectionCode.nested_too_deeply: _R.email_unreadable,
    RejectionCode.document_unavailable: _R.document_unavailable,
}

# Failures from before reasons existed carry only their class.
_REASON_OF_CLASS: Final[dict[FailureClass, FailureReason]] = {
    FailureClass.line: _R.call_failed,
    FailureClass.protocol: _R.protocol_error,
    FailureClass.document: _R.document_unreadable,
    FailureClass.resources: _R.no_available_resources,
    FailureClass.cancelled: _R.cancelled,
}

# Sending the same fax again later, unchanged, may go through.
RETRYABLE_REASONS: Final = frozenset(
    {
        _R.user_busy,
        _R.no_answer,
        _R.network_unavailable,
        _R.call_failed,
        _R.receiver_not_fax,
        _R.receiver_no_response,
        _R.call_dropped,
        _R.training_failed,
        _R.pages_not_confirmed,
        _R.protocol_error,
        _R.sender_no_response,
        _R.no_available_resources,
        _R.internal_error,
        _R.daily_page_limit,
        _R.cancelled,
    }
)


def rejection_reason(code: RejectionCode | str) -> FailureReason:
    try:
        return _REJECTION_REASONS[RejectionCode(code)]
    except (KeyError, ValueError):
        return FailureReason.document_unreadable


def failure_reason(failure: FaxFailure) -> FailureReason:
    return failure.reason or _REASON_OF_CLASS[failure.failure_class]


def failed_status(event: FaxFailed) -> ApiStatus:
    if event.failure.failure_class is FailureClass.cancelled:
        return ApiStatus.cancelled
    return ApiStatus.partially_delivered if event.partial else ApiStatus.failed


def event_type(status: ApiStatus) -> str | None:
    """The webhook event a fax entering ``status`` is told with (None: no event)."""
    return _EVENT_OF_STATUS.get(status)


def api_status(status: FaxStatus | None) -> ApiStatus:
    return ApiStatus.queued if status is None else _STATUS_OF_HISTORY[status]


class RejectionOut(BaseModel):
    code: str
    message: str


class FaxView(BaseModel):
    """The fax object of the API and of every webhook's ``data``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: str = Field(description="The fax id.")
    account_id: str
    faxbox_id: str | None = None
    user_id: str | None = None
    direction: str | None = Field(default=None, description="outbound or inbound.")
    status: ApiStatus
    to: str | None = Field(default=None, description="The number called (E.164).")
    from_: str | None = Field(default=None, alias="from", description="The calling number.")
    pages_sent: int | None = Field(
        default=None, description="Pages the far end confirmed (received, when inbound)."
    )
    pages_total: int | None = None
    attempts: int | None = None
    failure_reason: FailureReason | None = None
    failure_text: str | None = Field(default=None, description="The reason in plain words.")
    retryable: bool | None = Field(
        default=None,
        description="Once it failed: whether sending it again unchanged may go through.",
    )
    rejection_reasons: list[RejectionOut] = Field(default_factory=list)
    page_report: list[PageReport] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def dump(self) -> dict[str, object]:
        """JSON-ready, with ``from`` spelled as the API spells it."""
        return self.model_dump(mode="json", by_alias=True)


def _failure_fields(reason: FailureReason, text: str) -> dict[str, object]:
    return {
        "failure_reason": reason,
        "failure_text": text,
        "retryable": reason in RETRYABLE_REASONS,
    }


def from_record(record: HistoryRecord) -> FaxView:
    """The fax as the history keeps it."""
    status = api_status(record.status)
    outbound = record.direction != "inbound"
    fields: dict[str, object] = {}
    if record.result is not None and status not in (ApiStatus.delivered, ApiStatus.received):
        reason = record.result.reason
        if reason is None:
            reason = (
                rejection_reason(str(record.result.code))
                if status is ApiStatus.rejected
                else _REASON_OF_CLASS.get(
                    _class_of(record.result.failure_class), FailureReason.call_failed
                )
            )
        fields = _failure_fields(reason, record.result.text)
        if status is ApiStatus.retrying:
            fields["retryable"] = None  # still going: the next attempt is scheduled
    return FaxView(
        id=record.id,
        account_id=record.account_id,
        faxbox_id=record.faxbox_id,
        user_id=record.user_id,
        direction=record.direction,
        status=status,
        to=record.remote_number if outbound else record.local_number,
        from_=record.local_number if outbound else record.remote_number,
        pages_sent=record.pages,
        pages_total=record.pages_total,
        attempts=record.attempts,
        rejection_reasons=[
            RejectionOut(code=r.get("code", ""), message=r.get("message", ""))
            for r in record.rejection_reasons
        ],
        page_report=list(record.page_report),
        created_at=record.created_at,
        updated_at=record.updated_at,
        **fields,  # type: ignore[arg-type]
    )


def _class_of(value: str) -> FailureClass:
    try:
        return FailureClass(value)
    except ValueError:
        return FailureClass.line


def from_event(event: FaxMessage, fax_id: str | None = None) -> FaxView | None:
    """What ``event`` says about its fax (``fax_id``: one of a rejected submission's),
    or None for an event no webhook tells about."""
    base: dict[str, object] = {
        "id": fax_id or event.fax_id,
        "account_id": event.account_id,
        "updated_at": event.occurred_at,
    }
    match event:
        case OutboundFaxRequested():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="outbound",
                status=ApiStatus.queued,
                to=event.destination,
                from_=event.settings.caller_id,
                pages_sent=0,
                pages_total=event.pages,
                attempts=0,
                created_at=event.occurred_at,
            )
        case FaxAttemptStarted():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="outbound",
                status=ApiStatus.sending,
                to=event.destination,
                from_=event.caller_id,
                pages_total=event.pages_total,
                attempts=event.attempt,
            )
        case FaxSent():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="outbound",
                status=ApiStatus.delivered,
                to=event.destination,
                pages_sent=event.statistics.pages_transferred,
                pages_total=event.statistics.pages_total,
                attempts=event.attempts,
                page_report=list(event.page_report),
            )
        case FaxFailed():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="outbound",
                status=failed_status(event),
                to=event.destination,
                pages_sent=event.pages_sent,
                pages_total=event.pages_total,
                attempts=event.attempts,
                page_report=list(event.page_report),
                **_failure_fields(failure_reason(event.failure), event.failure.text),  # type: ignore[arg-type]
            )
        case OutboundFaxRejected():
            first = event.reasons[0]
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="outbound",
                status=ApiStatus.rejected,
                to=event.destination_raw,
                pages_sent=0,
                attempts=0,
                rejection_reasons=[
                    RejectionOut(code=r.code.value, message=r.message) for r in event.reasons
                ],
                **_failure_fields(  # type: ignore[arg-type]
                    rejection_reason(first.code), " ".join(r.message for r in event.reasons)
                ),
            )
        case InboundFaxReceived():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="inbound",
                status=ApiStatus.received,
                to=event.called_number,
                from_=event.caller_number or None,
                pages_sent=event.statistics.pages_transferred,
                pages_total=event.statistics.pages_total,
                attempts=1,
                page_report=list(event.page_report),
                created_at=event.occurred_at,
            )
        case InboundFaxFailed():
            return FaxView(
                **base,  # type: ignore[arg-type]
                faxbox_id=event.faxbox_id,
                user_id=event.user_id,
                direction="inbound",
                status=ApiStatus.receive_failed,
                to=event.called_number,
                from_=event.caller_number or None,
                pages_sent=event.pages_received,
                attempts=1,
                page_report=list(event.page_report),
                created_at=event.occurred_at,
                **_failure_fields(failure_reason(event.failure), event.failure.text),  # type: ignore[arg-type]
            )
    return None


def faxes_of(event: FaxMessage) -> tuple[str, ...]:
    """The faxes ``event`` is about: a rejected submission names each of its faxes."""
    if isinstance(event, OutboundFaxRejected) and event.fax_ids:
        return tuple(dict.fromkeys((event.fax_id, *event.fax_ids)))
    return (event.fax_id,)


_EVENT_NAMESPACE: Final = uuid.UUID("0b6b7f3e-3c0c-4f7e-9d7a-5e0f5f1d2a61")


def event_id(message_id: str, fax_id: str) -> str:
    """The webhook event id of what ``message_id`` says about ``fax_id``: the same for
    every redelivery of the message, so receivers can deduplicate by it."""
    return "evt_" + uuid.uuid5(_EVENT_NAMESPACE, f"{message_id}:{fax_id}").hex
