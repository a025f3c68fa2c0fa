"""Which numbers one delivered copy of a mail is faxed to, and the caps on reading it.

Real MIME, real number rules and rendering; the directory, counters and claims are the
in-memory versions of the validator's own ports.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import date

import pytest

from faxbox.shared.contracts import OversizeMail
from faxbox.validator.decision import Decision, Limits, Outcome, evaluate
from faxbox.validator.mime import Caps, parse_mail
from faxbox.validator.renderer import InlineRenderer
from tests.unit.validator.mailkit import (
    FAX_TO,
    REALM,
    FakeClaims,
    FakeCounters,
    FakeDirectory,
    World,
    gmail,
    pdf,
    standard_world,
)

ALICE = "alice@example.com"
DAY = date(2026, 11, 27)
A = f"+12125550147@{REALM}"
B = f"2125550148@{REALM}"


def copy_for(raw: bytes, recipient: str) -> bytes:
    """What the catch-all gets for one envelope recipient, as seen through the local relay
    and Dovecot: the mailbox in Delivered-To, the fax address in X-Original-To, on top of
    the mail as sent."""
    return (
        b"Return-Path: <alice@example.com>\r\nDelivered-To: fax@faxbox.test\r\n"
        b"Received: from [127.0.0.1] by vm with LMTP id x for <fax@faxbox.test>;"
        b" Mon, 07 Dec 2026 03:03:25 +0000\r\n" + f"X-Original-To: {recipient}\r\n".encode() + raw
    )


async def decide(
    raw: bytes,
    world: World | None = None,
    *,
    limits: Limits | None = None,
    counters: FakeCounters | None = None,
    claims: FakeClaims | None = None,
    reserve_for: str | None = None,
    oversize: OversizeMail | None = None,
) -> Decision:
    return await evaluate(
        raw,
        directory=FakeDirectory(world or standard_world()),
        counters=counters or FakeCounters(),
        renderer=InlineRenderer(),
        limits=limits or Limits(),
        day=DAY,
        reserve_for=reserve_for,
        claims=claims,
        mailbox="INBOX",
        oversize=oversize,
    )


def codes(decision: Decision) -> list[str]:
    if decision.ignored is not None:
        return [decision.ignored.code]
    return [r.code.value for r in decision.reasons]


async def test_a_copy_for_all_faxes_every_number_in_to_and_cc_once() -> None:
    raw = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, {B}", headers={"Cc": f"+12125550149@{REALM}"})
    decision = await decide(raw)
    assert decision.outcome is Outcome.ACCEPTED
    assert decision.numbers == ("+12125550147", "+12125550148", "+12125550149")
    assert decision.summary()["numbers"] == list(decision.numbers)
    assert decision.summary()["number"] == "+12125550147"


async def test_an_envelope_copy_is_for_its_recipient_only() -> None:
    sent = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, {B}")
    first = await decide(copy_for(sent, A))
    second = await decide(copy_for(sent, B))
    assert first.numbers == ("+12125550147",)
    assert second.numbers == ("+12125550148",)


async def test_bcc_only_the_envelope_names_the_number() -> None:
    sent = gmail(ALICE, [("s.pdf", pdf())], to="boss@example.com")
    decision = await decide(copy_for(sent, A))
    assert decision.numbers == ("+12125550147",)


async def test_the_topmost_realm_envelope_header_wins_over_one_the_sender_wrote() -> None:
    sent = gmail(ALICE, [("s.pdf", pdf())], to=A, headers={"X-Original-To": f"19005550100@{REALM}"})
    decision = await decide(copy_for(sent, A))
    assert decision.numbers == ("+12125550147",)


async def test_the_mailbox_itself_in_delivered_to_is_no_recipient() -> None:
    world = standard_world()
    # An intake mailbox inside the realm names no number: the copy is for all.
    sent = gmail(
        ALICE, [("s.pdf", pdf())], to=f"{A}, {B}", headers={"Delivered-To": f"intake@{REALM}"}
    )
    decision = await decide(sent, world)
    assert decision.numbers == ("+12125550147", "+12125550148")


async def test_two_spellings_of_one_number_are_one_fax() -> None:
    to = f"+12125550147@{REALM}, 12125550147@{REALM}, 0012125550147@{REALM}"
    decision = await decide(gmail(ALICE, [("s.pdf", pdf())], to=to))
    assert decision.outcome is Outcome.ACCEPTED
    assert decision.numbers == ("+12125550147",)


@pytest.mark.parametrize(("count", "outcome"), [(10, Outcome.ACCEPTED), (11, Outcome.REJECTED)])
async def test_at_most_ten_numbers_per_mail(count: int, outcome: Outcome) -> None:
    to = ", ".join(f"+1212555{n:04d}@{REALM}" for n in range(200, 200 + count))
    decision = await decide(gmail(ALICE, [("s.pdf", pdf())], to=to))
    assert decision.outcome is outcome
    if outcome is Outcome.REJECTED:
        assert codes(decision) == ["too_many_recipients"]
        assert "at most 10" in decision.reasons[0].message
        assert "11 fax numbers" in decision.reasons[0].message
    else:
        assert len(decision.numbers) == 10


async def test_the_limit_is_the_faxboxs_setting() -> None:
    world = World()
    world.add(ALICE, max_recipients=2)
    to = ", ".join(f"+1212555{n:04d}@{REALM}" for n in range(200, 203))
    decision = await decide(gmail(ALICE, [("s.pdf", pdf())], to=to), world)
    assert codes(decision) == ["too_many_recipients"]
    assert "at most 2" in decision.reasons[0].message


async def test_one_bad_number_and_nothing_is_faxed() -> None:
    raw = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, 12-34@{REALM}, fax@{REALM}")
    decision = await decide(raw)
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == ["invalid_number", "invalid_number"]
    assert "12-34@" in decision.reasons[0].message
    assert f"fax@{REALM}" in decision.reasons[1].message
    # Every copy of the mail sees the same To: the good number's copy is rejected too.
    copy = await decide(copy_for(raw, A))
    assert codes(copy) == ["invalid_number", "invalid_number"]


async def test_people_in_to_and_cc_are_not_fax_recipients() -> None:
    raw = gmail(
        ALICE,
        [("s.pdf", pdf())],
        to=f"Boss <boss@example.com>, {A}",
        headers={"Cc": "carol@example.com"},
    )
    decision = await decide(raw)
    assert decision.outcome is Outcome.ACCEPTED
    assert decision.numbers == ("+12125550147",)


async def test_several_from_addresses_are_dead_lettered_unanswered() -> None:
    raw = gmail(f"{ALICE}, mallory@evil.example", [("s.pdf", pdf())])
    decision = await decide(raw)
    assert decision.outcome is Outcome.IGNORED
    assert decision.ignored is not None
    assert (decision.ignored.code, decision.ignored.dead_letter) == ("multiple_senders", True)
    assert "mallory@evil.example" in decision.ignored.message


async def test_pages_are_reserved_for_every_fax() -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=5)
    counters = FakeCounters()
    two = gmail("gina@example.com", [("s.pdf", pdf(2))], to=f"{A}, {B}")
    accepted = await decide(two, world, counters=counters, reserve_for="fax1")
    assert accepted.outcome is Outcome.ACCEPTED
    assert counters.user_pages() == 4
    three = gmail("gina@example.com", [("s.pdf", pdf(2))], to=f"{A}, {B}, +12125550149@{REALM}")
    over = await decide(three, world, counters=counters, reserve_for="fax2")
    assert codes(over) == ["daily_page_limit"]
    assert "These 3 faxes have 2 pages each (6 pages)" in over.reasons[0].message


async def test_every_fax_gets_its_own_id_the_first_the_mails() -> None:
    raw = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, {B}")
    decision = await decide(raw, claims=FakeClaims(), reserve_for="fax_1")
    assert [r.fax_id for r in decision.recipients] == ["fax_1", "fax_1-2"]


async def test_a_number_claimed_by_another_copy_is_not_faxed_again() -> None:
    claims = FakeClaims()
    sent = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, {B}")
    # The same mail twice: once as a copy for all, once as an envelope copy for B.
    everyone = await decide(sent, claims=claims, reserve_for="fax_all")
    assert everyone.numbers == ("+12125550147", "+12125550148")
    again = await decide(copy_for(sent, B), claims=claims, reserve_for="fax_b")
    assert again.outcome is Outcome.IGNORED
    assert codes(again) == ["already_faxed"]
    # A redelivery of the first copy finds its own claims.
    redelivered = await decide(sent, claims=claims, reserve_for="fax_all")
    assert [r.fax_id for r in redelivered.recipients] == ["fax_all", "fax_all-2"]


async def test_envelope_copies_of_two_spellings_dial_once() -> None:
    claims = FakeClaims()
    sent = gmail(ALICE, [("s.pdf", pdf())], to=f"+12125550147@{REALM}, 12125550147@{REALM}")
    first = await decide(copy_for(sent, f"+12125550147@{REALM}"), claims=claims, reserve_for="f1")
    second = await decide(copy_for(sent, f"12125550147@{REALM}"), claims=claims, reserve_for="f2")
    assert first.numbers == ("+12125550147",)
    assert codes(second) == ["already_faxed"]


async def test_a_rejection_for_the_page_limit_gives_the_numbers_back() -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=1)
    claims = FakeClaims()
    raw = gmail("gina@example.com", [("s.pdf", pdf(1))], to=f"{A}, {B}")
    decision = await decide(raw, world, claims=claims, reserve_for="fax1")
    assert codes(decision) == ["daily_page_limit"]
    assert claims.held == {}


async def test_an_oversize_mail_tells_a_known_sender_size_and_limit() -> None:
    headers = gmail(ALICE, [], to=A).split(b"\n\n", 1)[0] + b"\n\n"
    oversize = OversizeMail(size=45 * 1024 * 1024, limit=30 * 1024 * 1024)
    decision = await decide(headers, oversize=oversize)
    assert codes(decision) == ["mail_too_large"]
    assert "45.0 MB" in decision.reasons[0].message
    assert "30 MB" in decision.reasons[0].message
    stranger = gmail("mallory@evil.example", [], to=A).split(b"\n\n", 1)[0] + b"\n\n"
    assert codes(await decide(stranger, oversize=oversize)) == ["unknown_sender"]


async def test_a_2_mb_to_header_is_refused_quickly_and_off_the_loop() -> None:
    people = ", ".join(f"person{n}@example.com" for n in range(80_000))
    raw = gmail(ALICE, [("s.pdf", pdf())], to=f"{A}, {people}")
    assert len(raw) > 2_000_000
    mail = parse_mail(raw)
    # Past the header cap only the start of each header is read, never the whole list.
    assert len(mail.visible) < 1000
    assert mail.parts == ()
    assert mail.cap is not None
    assert mail.cap.code.value == "headers_too_large"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    beat = asyncio.create_task(ticker())
    decision = await decide(raw)
    beat.cancel()
    assert codes(decision) == ["headers_too_large"]
    assert "kB" in decision.reasons[0].message
    assert ticks > 0  # the loop kept turning while the mail was read


async def test_more_addresses_than_the_cap_are_refused() -> None:
    to = ", ".join(f"p{n}@example.com" for n in range(101))
    decision = await decide(gmail(ALICE, [("s.pdf", pdf())], to=f"{FAX_TO}, {to}"))
    assert codes(decision) == ["too_many_addresses"]
    assert "more than 100 addresses" in decision.reasons[0].message


async def test_more_parts_than_the_cap_are_refused() -> None:
    many = [(f"p{n}.txt", b"x") for n in range(12)]
    raw = gmail(ALICE, many)
    decision = await decide(raw, limits=Limits(caps=Caps(parts=10)))
    assert codes(decision) == ["too_many_parts"]
    assert "more than 10 parts" in decision.reasons[0].message


async def test_nesting_deeper_than_the_cap_is_refused() -> None:
    boundary = [f"b{n}" for n in range(30)]
    head = (
        f"From: {ALICE}\r\nTo: {FAX_TO}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary[0]}"\r\n\r\n'
    )
    body = ""
    for outer, inner in itertools.pairwise(boundary):
        body += f'--{outer}\r\nContent-Type: multipart/mixed; boundary="{inner}"\r\n\r\n'
    body += f"--{boundary[-1]}\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    for b in reversed(boundary):
        body += f"--{b}--\r\n"
    decision = await decide((head + body).encode())
    assert codes(decision) == ["nested_too_deeply"]
