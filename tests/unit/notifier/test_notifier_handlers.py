"""Notifier handlers and mail composition with in-memory fakes of the notifier's own ports."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import pytest
from PIL import Image

from faxbox.notifier.compose import (
    FIXES,
    duration,
    example_address,
    failure_words,
    fax_filename,
    rejected_mail,
    thumbnail_png,
)
from faxbox.notifier.handlers import Deps, on_failed, on_sent
from faxbox.notifier.ports import MailDeferred, MailRefused
from faxbox.shared.bus import PermanentError, RetryLater, TransientError
from faxbox.shared.contracts import (
    FailureClass,
    FaxFailure,
    FaxMessage,
    NotificationSent,
    RejectionCode,
    RejectionReason,
)
from faxbox.shared.outbox import Decided, Outbox
from faxbox.shared.store import Account, Faxbox, User
from faxbox.shared.testing import MemoryDecisionStore, MemoryDocuments, MemoryPublisher
from tests.unit.notifier.notifier_fakes import (
    AT,
    FakeClaims,
    FakeDirectory,
    FakeMailer,
    failed_event,
    ref,
    sent_event,
    tiff_page,
)

E = TypeVar("E", bound=FaxMessage)


@dataclass
class World:
    deps: Deps
    claims: FakeClaims
    mailer: FakeMailer
    documents: MemoryDocuments
    decisions: MemoryDecisionStore
    publisher: MemoryPublisher

    async def handle(
        self, handler: Callable[[E, Deps], Awaitable[Decided | None]], event: E
    ) -> None:
        """As the notifier's consumer does: what the handler decides is recorded, published."""

        async def decide(message: E) -> Decided | None:
            return await handler(message, self.deps)

        await Outbox(self.decisions, self.publisher).consuming(decide)(event)


@pytest.fixture
def world() -> World:
    account = Account(id="acc1", name="ACME", realm="acme.faxbox.test")
    user = User(id="usr_1", account_id="acc1", email="alice@example.com")
    box = Faxbox(
        id="fbx_1",
        account_id="acc1",
        owner_user_id="usr_1",
        extra_recipients=["Boss@example.com", "alice@example.com"],
    )
    quiet = Faxbox(
        id="fbx_q", account_id="acc1", owner_user_id="usr_1", success_notifications=False
    )
    claims, mailer, documents = FakeClaims(), FakeMailer(), MemoryDocuments()
    decisions, publisher = MemoryDecisionStore(), MemoryPublisher()
    documents.keep(ref("tiff1"), tiff_page())
    deps = Deps(
        directory=FakeDirectory({"usr_1": user}, {"fbx_1": box, "fbx_q": quiet}, account),
        documents=documents,
        claims=claims,
        decisions=decisions,
        mailer=mailer,
        sender="Faxbox <fax@faxbox.test>",
        message_id_domain="faxbox.test",
    )
    return World(deps, claims, mailer, documents, decisions, publisher)


# --- handlers --------------------------------------------------------------------------------


async def test_one_mail_per_fax_and_kind_however_often_the_event_comes(world: World) -> None:
    for _ in range(3):
        await world.handle(on_sent, sent_event())
    assert len(world.mailer.sent) == 1
    message, recipients = world.mailer.sent[0]
    # Case-insensitive duplicates among the extra recipients are dropped.
    assert recipients == ["alice@example.com", "boss@example.com"]
    notes = [m for m in world.publisher.published if isinstance(m, NotificationSent)]
    assert len(notes) == 3
    assert len({n.model_dump_json() for n in notes}) == 1
    assert notes[0].smtp_message_id == message["Message-ID"]


async def test_the_sent_mail_says_how_many_calls_carried_the_fax(world: World) -> None:
    await world.handle(on_sent, sent_event().model_copy(update={"calls": 2}))
    ((message, _),) = world.mailer.sent
    plain, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert html_part is not None
    text = plain.get_content()
    assert "Calls:              2 (each redial sent only the pages not yet confirmed)" in text
    html = html_part.get_content()
    assert "<tr><td>Calls</td><td>2 (each redial" in html


async def test_a_deferral_releases_the_claim_and_the_retry_reuses_the_message_id(
    world: World,
) -> None:
    world.mailer.script.append(MailDeferred("451 try later"))
    with pytest.raises(TransientError, match="451"):
        await world.handle(on_failed, failed_event())
    first_id = str(world.claims.entries["fax_2:failed"]["mid"])
    await world.handle(on_failed, failed_event())
    assert [m["Message-ID"] for m, _ in world.mailer.sent] == [first_id]


async def test_a_refusal_is_permanent_with_the_server_answer(world: World) -> None:
    world.mailer.script.append(MailRefused("550 5.1.1 no such user"))
    with pytest.raises(PermanentError, match=r"550 5\.1\.1 no such user"):
        await world.handle(on_failed, failed_event())
    assert world.publisher.published == []


async def test_a_crash_after_sending_resends_once_with_the_same_message_id(world: World) -> None:
    world.decisions.failures.append(ConnectionError("database went away"))
    with pytest.raises(ConnectionError):
        await world.handle(on_failed, failed_event())
    # The redelivery finds the claim still held: it waits ...
    with pytest.raises(RetryLater):
        await world.handle(on_failed, failed_event())
    # ... and once the lease ran out it sends again, with the same Message-ID.
    world.claims.now += timedelta(minutes=5)
    await world.handle(on_failed, failed_event())
    ids = [m["Message-ID"] for m, _ in world.mailer.sent]
    assert len(ids) == 2
    assert ids[0] == ids[1]
    await world.handle(on_failed, failed_event())
    assert len(world.mailer.sent) == 2


async def test_each_fax_of_one_mail_is_told_in_the_thread_of_that_mail(world: World) -> None:
    """One email to two numbers is two faxes: a mail about each, naming its number, both
    answering the user's own email."""
    original = "<their-mail@client.example>"
    first = sent_event().model_copy(update={"source_message_id": original})
    second = failed_event().model_copy(
        update={"fax_id": "fax_1-2", "destination": "+14155550124", "source_message_id": original}
    )
    await world.handle(on_sent, first)
    await world.handle(on_failed, second)
    (sent, _), (failed, _) = world.mailer.sent
    assert (sent["In-Reply-To"], failed["In-Reply-To"]) == (original, original)
    assert sent["References"] == failed["References"] == original
    assert "+14155550123" in sent["Subject"]
    assert "+14155550124" in failed["Subject"]
    for message, number in ((sent, "+14155550123"), (failed, "+14155550124")):
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert text is not None
        assert html is not None
        assert number in text.get_content()
        assert number in html.get_content()
    assert sorted(world.decisions.decisions) == ["fax_1-2:failed", "fax_1:sent"]


def test_every_rejection_code_says_how_to_fix_it() -> None:
    assert set(FIXES) == set(RejectionCode)


async def test_success_mails_off_sends_nothing(world: World) -> None:
    await world.handle(on_sent, sent_event("fbx_q"))
    assert world.mailer.sent == []
    assert world.publisher.published == []


async def test_a_missing_transmitted_tiff_gives_a_mail_without_preview(world: World) -> None:
    await world.handle(on_sent, sent_event(tiff="gone"))
    message, _ = world.mailer.sent[0]
    assert not [p for p in message.walk() if p.get_content_type() == "image/png"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "No preview" in body.get_content()


async def test_an_unknown_faxbox_is_permanent(world: World) -> None:
    with pytest.raises(PermanentError, match="fbx_nope"):
        await world.handle(on_sent, sent_event("fbx_nope"))


# --- composition -------------------------------------------------------------------------------


def test_the_thumbnail_keeps_the_page_proportions_at_standard_resolution() -> None:
    png = Image.open(io.BytesIO(thumbnail_png(tiff_page(1728, 1100))))
    # 1728 px at 204 dpi wide, 1100 px at 98 dpi high: 8.47 x 11.2 inches.
    assert png.size[0] == 300
    assert 390 <= png.size[1] <= 400


def test_failures_in_plain_words() -> None:
    words, name, hint = failure_words(FaxFailure(failure_class=FailureClass.line, code=2, text="x"))
    assert (words, name) == ("No fax machine answered the call.", "T30_ERR_T0_EXPIRED")
    assert hint
    words, name, hint = failure_words(failed_event().failure)
    assert name is None
    assert words == "No carrier line is available for this number."
    assert "Try again later" in hint


def test_example_addresses_use_the_realm_and_their_number_when_it_is_valid() -> None:
    assert example_address("(415) 555-0123", "acme.faxbox.test") == "+14155550123@acme.faxbox.test"
    assert example_address("12", "acme.faxbox.test") == "+14155550123@acme.faxbox.test"


def test_the_rejected_mail_escapes_what_the_sender_wrote_in_html() -> None:
    mail = rejected_mail(
        destination_raw="<b>x</b>",
        reasons=(RejectionReason(code=RejectionCode.invalid_number, message="Bad <number>."),),
        realm="acme.faxbox.test",
        in_reply_to=None,
    )
    assert "&lt;b&gt;x&lt;/b&gt;" in mail.html
    assert "Bad &lt;number&gt;." in mail.html
    assert "<b>x</b>" in mail.text


def test_file_names_and_durations() -> None:
    assert fax_filename("+44 (20) 7946/0958", AT, "America/New_York") == (
        "+442079460958_2026-11-10_04-30-00.pdf"
    )
    assert fax_filename("", AT, "UTC") == "unknown_2026-11-10_09-30-00.pdf"
    assert duration(59.6) == "1 min 0 s"
    assert duration(12) == "12 s"
