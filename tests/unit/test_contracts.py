from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from faxbox.shared import contracts as c
from faxbox.shared.contracts_schema import main as schema_main

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def doc(name: str = "fax.tif") -> c.DocumentRef:
    return c.DocumentRef(
        account_id="acct1",
        month="202611",
        file_id="f" * 32,
        filename=name,
        content_type="image/tiff",
        length=1234,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
    )


def stats() -> c.TransferStatistics:
    return c.TransferStatistics(
        pages_transferred=3,
        pages_total=3,
        bit_rate=14400,
        ecm=True,
        x_resolution=8040,
        y_resolution=7700,
        remote_station_id="+1 555 0100",
        duration_s=61.5,
    )


def failure() -> c.FaxFailure:
    return c.FaxFailure(failure_class=c.FailureClass.line, code=-486, text="The line was busy.")


FAX: dict[str, Any] = {"fax_id": "fax1", "account_id": "acct1", "month": "202611"}

SAMPLES: list[c.Message] = [
    c.MailReceived(
        fax_id="fax1",
        mailbox="INBOX",
        uid_validity=7,
        uid=42,
        rfc822_message_id="<abc@example.com>",
        raw=doc("mail.eml"),
        received_at=NOW,
    ),
    c.OutboundFaxRequested(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        sender_email="alice@example.com",
        destination="+12125551234",
        settings=c.FaxSettings(identity="ACME", header_name="Acme Inc", timezone="Europe/Paris"),
        original=doc("a.pdf"),
        fax_tiff=doc(),
        pages=3,
    ),
    c.OutboundFaxRejected(
        **FAX,
        user_id="u1",
        sender_email="alice@example.com",
        destination_raw="555",
        reasons=(c.RejectionReason(code=c.RejectionCode.invalid_number, message="Too short."),),
        raw=doc("mail.eml"),
    ),
    c.FaxAttemptFailed(
        **FAX,
        destination="+12125551234",
        attempt=1,
        attempts_allowed=3,
        failure=failure(),
        pages_sent=0,
        next_attempt_at=NOW + timedelta(minutes=2),
    ),
    c.FaxSent(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        destination="+12125551234",
        attempts=1,
        carrier_id="c1",
        statistics=stats(),
        transmitted_tiff=doc(),
    ),
    c.FaxFailed(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        destination="+12125551234",
        attempts=3,
        failure=failure(),
        pages_sent=1,
        pages_total=3,
    ),
    c.InboundFaxReceived(
        **FAX,
        faxbox_id="fb1",
        user_id="u1",
        caller_number="+15551230000",
        called_number="+15557654321",
        statistics=stats(),
        tiff=doc(),
        pdf=doc("fax.pdf"),
    ),
    c.InboundFaxFailed(
        **FAX,
        faxbox_id="fb1",
        user_id="u1",
        caller_number="+15551230000",
        called_number="+15557654321",
        failure=failure(),
        pages_received=1,
        partial_pdf=doc("partial.pdf"),
    ),
    c.NotificationSent(
        **FAX,
        kind=c.NotificationKind.sent,
        recipients=("alice@example.com",),
        smtp_message_id="<n1@faxbox>",
    ),
    c.FaxSubmitted(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        numbers=("+12125551234", "2125550147"),
        document=doc("upload.pdf"),
        channel="api",
    ),
    c.FaxCancelRequested(**FAX, user_id="u1"),
    c.FaxAttemptStarted(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        destination="+12125551234",
        attempt=2,
        carrier_id="c1",
        pages_total=3,
    ),
    c.WebhookDeliveryRequested(
        fax_id="fax1",
        account_id="acct1",
        webhook_id="whk_1",
        event_id="evt_1",
        month="202611",
    ),
]


def page(number: int, confirmed: bool = True) -> c.PageReport:
    return c.PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        encoding="T.6",
        length=2292,
        image_bytes=40_000,
        bad_rows=0,
        longest_bad_row_run=0,
        ecm_retries=0,
    )


def test_a_failed_fax_with_some_pages_confirmed_is_partial() -> None:
    failed = SAMPLES[5]
    assert isinstance(failed, c.FaxFailed)
    assert failed.partial  # 1 of 3
    assert not failed.model_copy(update={"pages_sent": 0}).partial
    with_report = failed.model_copy(update={"page_report": (page(1), page(2, False))})
    again = c.FaxFailed.model_validate_json(with_report.model_dump_json())
    assert [p.confirmed for p in again.page_report] == [True, False]
    assert "partial" not in with_report.model_dump()  # a property, not a field


def test_events_from_before_page_reports_and_reasons_still_read() -> None:
    sent = SAMPLES[4].model_dump(mode="json")
    del sent["page_report"]
    assert c.FaxSent.model_validate(sent).page_report == ()
    assert (
        c.FaxFailure.model_validate({"failure_class": "line", "code": -486, "text": "x"}).reason
        is None
    )


def test_samples_cover_every_contract() -> None:
    assert {type(m) for m in SAMPLES} == set(c.ALL_CONTRACTS)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_json(message: c.Message) -> None:
    again = type(message).model_validate_json(message.model_dump_json())
    assert again == message
    assert again.schema_version == 1
    assert c.contract_by_name(type(message).__name__) is type(message)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_messages_are_frozen(message: c.Message) -> None:
    with pytest.raises(ValidationError):
        message.fax_id = "other"  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    data = SAMPLES[2].model_dump(mode="json") | {"surprise": 1}
    with pytest.raises(ValidationError, match="surprise"):
        c.OutboundFaxRejected.model_validate(data)


def test_naive_datetimes_are_refused_and_aware_ones_normalized_to_utc() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        c.NotificationSent(
            **FAX,
            occurred_at=datetime(2026, 1, 1),
            kind=c.NotificationKind.sent,
            recipients=("a@b.c",),
            smtp_message_id="<x>",
        )
    paris = timezone(timedelta(hours=1))
    msg = c.NotificationSent(
        **FAX,
        occurred_at=datetime(2026, 1, 1, 1, 30, tzinfo=paris),
        kind=c.NotificationKind.sent,
        recipients=("a@b.c",),
        smtp_message_id="<x>",
    )
    assert msg.occurred_at == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert msg.occurred_at.tzinfo is UTC


@pytest.mark.parametrize("month", ["202613", "2026-11", "20261", "202600"])
def test_month_key_is_validated(month: str) -> None:
    with pytest.raises(ValidationError):
        c.DocumentRef(**(doc().model_dump() | {"month": month}))


@pytest.mark.parametrize("number", ["12125551234", "+0123456789", "+1", "+1212555123a"])
def test_destination_must_be_e164(number: str) -> None:
    data = SAMPLES[1].model_dump(mode="json") | {"destination": number}
    with pytest.raises(ValidationError):
        c.OutboundFaxRequested.model_validate(data)


def test_rejection_needs_at_least_one_reason() -> None:
    data = SAMPLES[2].model_dump(mode="json") | {"reasons": []}
    with pytest.raises(ValidationError):
        c.OutboundFaxRejected.model_validate(data)


def test_identity_is_at_most_20_characters() -> None:
    with pytest.raises(ValidationError):
        c.FaxSettings(identity="x" * 21)


def test_month_of_uses_utc() -> None:
    late_new_year_eve_in_new_york = datetime(
        2026, 12, 31, 23, 30, tzinfo=timezone(-timedelta(hours=5))
    )
    assert c.month_of(late_new_year_eve_in_new_york) == "202701"


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0), (2, 120), (3, 300), (4, 300)])
def test_retry_policy_delays(attempt: int, delay: int) -> None:
    assert c.RetryPolicy().delay_before_attempt(attempt) == delay


def test_message_ids_are_unique_by_default() -> None:
    a = SAMPLES[8].model_copy(update={})
    b = c.NotificationSent(**(SAMPLES[8].model_dump() | {"message_id": c.new_id()}))
    assert a.message_id != b.message_id


def test_committed_json_schemas_are_current() -> None:
    assert schema_main(["--check"]) == 0
