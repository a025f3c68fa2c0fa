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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

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
    RejectionReason,
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


class _Owned(Protocol):
    """Whose fax it is: a history record and every event a webhook tells about say it."""

    @property
    def account_id(self) -> str: ...

    @property
    def faxbox_id(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Told:
    """What a history record or an event tells of its fax, besides whose fax it is; named
    as FaxView names it."""

    status: ApiStatus
    to: str | None
    from_: str | None
    pages_sent: int | None  # received, when inbound
    pages_total: int | None
    attempts: int | None
    page_report: Sequence[PageReport] = ()
    failure: Mapping[str, Any] = field(default_factory=dict)  # FaxView's failure fields
    rejection_reasons: Sequence[RejectionOut] = ()

    def view(
        self,
        fax_id: str,
        owned: _Owned,
        direction: str | None,
        created: datetime | None,
        updated: datetime | None,
    ) -> FaxView:
        told = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "failure"}
        return FaxView(
            id=fax_id,
            account_id=owned.account_id,
            faxbox_id=owned.faxbox_id,
            user_id=owned.user_id,
            direction=direction,
            created_at=created,
            updated_at=updated,
            **told,
            **self.failure,
        )


def from_record(record: HistoryRecord) -> FaxView:
    """The fax as the history keeps it."""
    status = api_status(record.status)
    outbound = record.direction != "inbound"
    failure: dict[str, object] = {}
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
        failure = _failure_fields(reason, record.result.text)
        if status is ApiStatus.retrying:
            failure["retryable"] = None  # still going: the next attempt is scheduled
    ours, theirs = record.local_number, record.remote_number
    told = _Told(
        status,
        theirs if outbound else ours,
        ours if outbound else theirs,
        record.pages,
        record.pages_total,
        record.attempts,
        record.page_report,
        failure,
        [
            RejectionOut(code=r.get("code", ""), message=r.get("message", ""))
            for r in record.rejection_reasons
        ],
    )
    return told.view(record.id, record, record.direction, record.created_at, record.updated_at)


def _class_of(value: str) -> FailureClass:
    try:
        return FailureClass(value)
    except ValueError:
        return FailureClass.line


_Event = (
    OutboundFaxRequested
    | FaxAttemptStarted
    | FaxSent
    | FaxFailed
    | OutboundFaxRejected
    | InboundFaxReceived
    | InboundFaxFailed
)
_INBOUND: Final = (InboundFaxReceived, InboundFaxFailed)
# The events that make a fax, and so date its creation.
_FIRST: Final = (OutboundFaxRequested, *_INBOUND)


def from_event(event: FaxMessage, fax_id: str | None = None) -> FaxView | None:
    """What ``event`` says about its fax (``fax_id``: one of a rejected submission's),
    or None for an event no webhook tells about."""
    if not isinstance(event, _Event):
        return None
    direction = "inbound" if isinstance(event, _INBOUND) else "outbound"
    created = event.occurred_at if isinstance(event, _FIRST) else None
    return _told(event).view(fax_id or event.fax_id, event, direction, created, event.occurred_at)


def _told(event: _Event) -> _Told:
    return _Told(
        failed_status(event) if isinstance(event, FaxFailed) else _STATUS_OF_EVENT[type(event)],
        *_line(event),
        *_pages(event),
        _attempts(event),
        event.page_report if isinstance(event, (FaxSent, FaxFailed, *_INBOUND)) else (),
        _failure(event),
        [RejectionOut(code=r.code.value, message=r.message) for r in _rejections(event)],
    )


_STATUS_OF_EVENT: Final[Mapping[type[FaxMessage], ApiStatus]] = {
    OutboundFaxRequested: ApiStatus.queued,
    FaxAttemptStarted: ApiStatus.sending,
    FaxSent: ApiStatus.delivered,
    OutboundFaxRejected: ApiStatus.rejected,
    InboundFaxReceived: ApiStatus.received,
    InboundFaxFailed: ApiStatus.receive_failed,
}


def _line(event: _Event) -> tuple[str, str | None]:
    """The number called, and the number calling when the event knows it."""
    if isinstance(event, _INBOUND):
        return event.called_number, event.caller_number or None
    if isinstance(event, OutboundFaxRejected):
        return event.destination_raw, None
    if isinstance(event, OutboundFaxRequested):
        return event.destination, event.settings.caller_id
    if isinstance(event, FaxAttemptStarted):
        return event.destination, event.caller_id
    return event.destination, None


def _pages(event: _Event) -> tuple[int | None, int | None]:
    """Pages sent (received, when inbound), and pages in all, as far as the event knows."""
    if isinstance(event, (FaxSent, InboundFaxReceived)):
        return event.statistics.pages_transferred, event.statistics.pages_total
    if isinstance(event, OutboundFaxRequested):
        return 0, event.pages
    if isinstance(event, OutboundFaxRejected):
        return 0, None
    if isinstance(event, InboundFaxFailed):
        return event.pages_received, None
    if isinstance(event, FaxFailed):
        return event.pages_sent, event.pages_total
    return None, event.pages_total  # a call just started


def _attempts(event: _Event) -> int:
    if isinstance(event, _INBOUND):
        return 1
    if isinstance(event, (OutboundFaxRequested, OutboundFaxRejected)):
        return 0
    return event.attempt if isinstance(event, FaxAttemptStarted) else event.attempts


def _failure(event: _Event) -> dict[str, object]:
    if isinstance(event, (FaxFailed, InboundFaxFailed)):
        return _failure_fields(failure_reason(event.failure), event.failure.text)
    if isinstance(event, OutboundFaxRejected):
        text = " ".join(r.message for r in event.reasons)
        return _failure_fields(rejection_reason(event.reasons[0].code), text)
    return {}


def _rejections(event: _Event) -> tuple[RejectionReason, ...]:
    return event.reasons if isinstance(event, OutboundFaxRejected) else ()


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
