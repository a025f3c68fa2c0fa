"""Fax event stories for history tests (shared by unit, integration and the benchmark)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FaxAttemptFailed,
    FaxFailed,
    FaxFailure,
    FaxMessage,
    FaxSent,
    FaxSettings,
    InboundFaxFailed,
    InboundFaxReceived,
    NotificationKind,
    NotificationSent,
    OutboundFaxRejected,
    OutboundFaxRequested,
    RejectionCode,
    RejectionReason,
    TransferStatistics,
)


def ref(account_id: str, month: str, name: str) -> DocumentRef:
    return DocumentRef(
        account_id=account_id,
        month=month,
        file_id="doc_" + name.replace(".", "_"),
        filename=name,
        content_type="image/tiff" if name.endswith(".tif") else "application/pdf",
        length=100,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
    )


def stats(pages: int, total: int) -> TransferStatistics:
    return TransferStatistics(
        pages_transferred=pages,
        pages_total=total,
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        remote_station_id="REMOTE 1",
        duration_s=42.5,
    )


def outbound_sent(
    fax_id: str, account_id: str, t0: datetime, month: str | None = None
) -> list[FaxMessage]:
    """requested, two failed attempts, sent, the sent mail."""
    month = month or t0.strftime("%Y%m")
    common: dict[str, Any] = {"fax_id": fax_id, "account_id": account_id, "month": month}
    failure = FaxFailure(failure_class=FailureClass.line, code=2, text="no answer")
    return [
        OutboundFaxRequested(
            **common,
            occurred_at=t0,
            user_id="usr_1",
            faxbox_id="fbx_1",
            sender_email="alice@example.com",
            destination="+14155550123",
            settings=FaxSettings(caller_id="+14155550100"),
            original=ref(account_id, month, "original.pdf"),
            fax_tiff=ref(account_id, month, "fax.tif"),
            pages=3,
            source_message_id="<orig@example.com>",
        ),
        FaxAttemptFailed(
            **common,
            occurred_at=t0 + timedelta(minutes=1),
            destination="+14155550123",
            attempt=1,
            attempts_allowed=3,
            failure=failure,
            pages_sent=0,
            next_attempt_at=t0 + timedelta(minutes=3),
        ),
        FaxAttemptFailed(
            **common,
            occurred_at=t0 + timedelta(minutes=4),
            destination="+14155550123",
            attempt=2,
            attempts_allowed=3,
            failure=FaxFailure(failure_class=FailureClass.protocol, code=21, text="cut"),
            pages_sent=1,
            next_attempt_at=t0 + timedelta(minutes=9),
        ),
        FaxSent(
            **common,
            occurred_at=t0 + timedelta(minutes=10),
            user_id="usr_1",
            faxbox_id="fbx_1",
            destination="+14155550123",
            attempts=3,
            carrier_id="car_1",
            statistics=stats(3, 3),
            transmitted_tiff=ref(account_id, month, "transmitted.tif"),
            source_message_id="<orig@example.com>",
        ),
        NotificationSent(
            **common,
            occurred_at=t0 + timedelta(minutes=11),
            kind=NotificationKind.sent,
            recipients=("alice@example.com",),
            smtp_message_id="<n1@faxbox>",
        ),
    ]


def outbound_failed(fax_id: str, account_id: str, t0: datetime) -> list[FaxMessage]:
    month = t0.strftime("%Y%m")
    common: dict[str, Any] = {"fax_id": fax_id, "account_id": account_id, "month": month}
    story = outbound_sent(fax_id, account_id, t0)[:3]
    return [
        *story,
        FaxFailed(
            **common,
            occurred_at=t0 + timedelta(minutes=10),
            user_id="usr_1",
            faxbox_id="fbx_1",
            destination="+14155550123",
            attempts=3,
            failure=FaxFailure(failure_class=FailureClass.line, code=2, text="no answer"),
            pages_sent=1,
            pages_total=3,
        ),
    ]


def rejected(fax_id: str, account_id: str, t0: datetime) -> OutboundFaxRejected:
    return OutboundFaxRejected(
        fax_id=fax_id,
        account_id=account_id,
        month=t0.strftime("%Y%m"),
        occurred_at=t0,
        user_id="usr_1",
        faxbox_id="fbx_1",
        sender_email="alice@example.com",
        destination_raw="555-0123",
        reasons=(
            RejectionReason(code=RejectionCode.invalid_number, message="Number too short."),
            RejectionReason(code=RejectionCode.no_attachment, message="No PDF attached."),
        ),
        raw=ref("intake", t0.strftime("%Y%m"), "mail.eml"),
    )


def inbound(fax_id: str, account_id: str, t0: datetime, *, ok: bool = True) -> list[FaxMessage]:
    month = t0.strftime("%Y%m")
    common: dict[str, Any] = {"fax_id": fax_id, "account_id": account_id, "month": month}
    event: FaxMessage
    if ok:
        event = InboundFaxReceived(
            **common,
            occurred_at=t0,
            faxbox_id="fbx_1",
            user_id="usr_1",
            caller_number="+442079460958",
            called_number="+14155550100",
            statistics=stats(2, 2),
            tiff=ref(account_id, month, "in.tif"),
            pdf=ref(account_id, month, "in.pdf"),
        )
    else:
        event = InboundFaxFailed(
            **common,
            occurred_at=t0,
            faxbox_id="fbx_1",
            user_id="usr_1",
            caller_number="+442079460958",
            called_number="+14155550100",
            failure=FaxFailure(failure_class=FailureClass.protocol, code=33, text="dropped"),
            pages_received=1,
            partial_pdf=ref(account_id, month, "partial.pdf"),
        )
    note = NotificationSent(
        **common,
        occurred_at=t0 + timedelta(seconds=5),
        kind=NotificationKind.received if ok else NotificationKind.inbound_failed,
        recipients=("alice@example.com",),
        smtp_message_id="<n2@faxbox>",
    )
    return [event, note]
