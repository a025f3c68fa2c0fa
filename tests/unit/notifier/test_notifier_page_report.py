"""The per-page report and "partly sent" in the sent and failed mails."""

from __future__ import annotations

from faxbox.notifier.compose import failed_mail, sent_mail
from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxFailed,
    FaxFailure,
    PageReport,
)
from tests.unit.notifier.notifier_fakes import failed_event, sent_event


def page(number: int, confirmed: bool, *, retries: int = 0, bad_rows: int = 0) -> PageReport:
    return PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=14400 if confirmed else 9600,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        encoding="T.6",
        length=2292,
        image_bytes=40_000,
        bad_rows=bad_rows,
        longest_bad_row_run=0,
        ecm_retries=retries,
        transmissions=2 if not confirmed else 1,
    )


DROPPED = FaxFailure(
    failure_class=FailureClass.line,
    code=49,
    text="The telephone call was cut off before the fax finished.",
    reason=FailureReason.call_dropped,
)


def failed(pages_sent: int, source_message_id: str | None, *reports: PageReport) -> FaxFailed:
    return failed_event().model_copy(
        update={
            "destination": "+12125550123",
            "failure": DROPPED,
            "pages_sent": pages_sent,
            "pages_total": 3,
            "source_message_id": source_message_id,
            "page_report": reports,
        }
    )


def test_the_sent_mail_lists_every_page_as_the_far_end_answered() -> None:
    sent = sent_event().model_copy(
        update={"page_report": (page(1, True), page(2, True, retries=3))}
    )
    mail = sent_mail(sent, timezone="America/New_York", thumbnail=None)
    lines = [line for line in mail.text.splitlines() if line[:1].isdigit()]
    assert len(lines) == 2
    assert lines[1].split()[:4] == ["2", "yes", "MCF", "14400"]
    assert "204x196" in lines[0]
    assert "<td>T.6</td><td>3</td>" in mail.html


def test_a_fax_with_some_pages_confirmed_is_partly_sent() -> None:
    mail = failed_mail(
        failed(1, "<orig@example.com>", page(1, True), page(2, False, bad_rows=12)),
        timezone="UTC",
    )
    assert mail.subject == "Fax to +12125550123 partly sent (1 of 3 pages)"
    assert "confirmed 1 of its 3 pages" in mail.text
    assert "2     no         RTN" in mail.text
    assert "partly sent" in mail.html


def test_a_fax_with_no_page_confirmed_failed() -> None:
    mail = failed_mail(failed(0, None), timezone="UTC")
    assert mail.subject == "Fax to +12125550123 failed"
    assert "could not be sent" in mail.text
    assert "Page by page" not in mail.text
