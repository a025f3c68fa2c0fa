"""Notes a delivery carries: through the in-memory bus's retries, and as headers."""

from __future__ import annotations

from faxbox.shared import notes
from faxbox.shared.contracts import MailReceived
from faxbox.shared.policy import Attempts, RetryLater, decide
from faxbox.shared.testing import MemoryBus
from tests.support import sample_mail_received as mail
from tests.unit.test_policy import S as SETTINGS


async def test_a_retried_message_comes_back_with_its_notes_and_keeps_them() -> None:
    bus = MemoryBus()
    seen: list[dict[str, str]] = []

    async def handle(message: MailReceived) -> None:
        seen.append(dict(notes.carried()))
        if len(seen) == 1:
            raise RetryLater("the database is away", 1, notes={"pages": "3"})
        if len(seen) == 2:
            raise RetryLater("not yet", 1)

    bus.consumer("validator", {MailReceived: handle})
    await bus.publish(mail(1))
    await bus.join()
    bus.release_retries()
    await bus.join()
    bus.release_retries()
    await bus.join()
    assert seen == [{}, {"pages": "3"}, {"pages": "3"}]
    assert notes.carried() == {}


def test_the_policy_passes_a_retry_laters_notes_on() -> None:
    decision = decide(RetryLater("later", 7, notes={"a": "b"}), Attempts(), SETTINGS)
    assert decision.notes == {"a": "b"}  # type: ignore[union-attr]


def test_notes_round_trip_through_headers_and_other_headers_are_not_notes() -> None:
    headers = {**notes.to_headers({"pages": "5"}), "x-faxbox-attempt": 2, "x-other": "z"}
    headers[notes.HEADER_PREFIX + "raw"] = b"bytes"
    assert notes.from_headers(headers) == {"pages": "5", "raw": "bytes"}
    assert notes.from_headers(None) == {}
