"""docs/api.md stays true: every status, failure reason and webhook event is documented,
with the retryable column as the code has it, and the published retry schedule is the
one the webhooks service uses."""

from __future__ import annotations

import re
from pathlib import Path

from faxbox.shared.contracts import FailureReason
from faxbox.shared.faxview import RETRYABLE_REASONS, WEBHOOK_EVENTS, ApiStatus
from faxbox.webhooks.handlers import RETRY_SCHEDULE_S

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()


def _rows(first_column: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[a-z_.]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_failure_reason_is_documented_with_its_retryable_answer() -> None:
    rows = _rows("failure_reason")
    for reason in FailureReason:
        assert reason.value in rows, f"{reason.value} is not in docs/api.md"
        expected = "yes" if reason in RETRYABLE_REASONS else "no"
        assert rows[reason.value][-1] == expected, reason.value


def test_every_status_and_event_is_documented() -> None:
    rows = _rows("status")
    for status in ApiStatus:
        assert status.value in rows, status.value
    for event in WEBHOOK_EVENTS:
        assert event in rows, event


def test_the_published_retry_schedule_is_the_services() -> None:
    words = {10: "10 s", 60: "1 min", 600: "10 min", 3600: "1 h", 14400: "4 h", 43200: "12 h"}
    published = ", ".join(words.get(s, f"{s // 3600} h") for s in RETRY_SCHEDULE_S)
    assert published in " ".join(DOC.split())
