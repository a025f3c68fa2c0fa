"""The validator's decision on a corpus of real-shaped emails, each with its exact outcome.

The directory and page counters are in-memory versions of the validator's own ports;
parsing, number rules, authorization and rendering are the real code.
"""

# The corpus is a table, one case a line: wrapping it would hide what each case expects.
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from faxbox.validator.decision import Decision, Limits, Outcome, evaluate
from faxbox.validator.mime import DocumentKind, PartRole, parse_mail
from faxbox.validator.renderer import InlineRenderer
from tests.unit.validator.mailkit import (
    FAX_TO,
    PNG,
    REALM,
    FakeCounters,
    FakeDirectory,
    World,
    apple_mail,
    forwarded,
    gmail,
    octet_stream,
    outlook,
    pdf,
    standard_world,
    tiff,
    tiff_mail,
    with_attachment_named,
)

ALICE = "alice@example.com"
DAY = date(2026, 11, 27)
TRUSTED = "mx.acme.fax.test"


async def decide(
    raw: bytes,
    world: World | None = None,
    limits: Limits | None = None,
    counters: FakeCounters | None = None,
    reserve_for: str | None = None,
) -> Decision:
    return await evaluate(
        raw,
        directory=FakeDirectory(world or standard_world()),
        counters=counters or FakeCounters(),
        renderer=InlineRenderer(),
        limits=limits or Limits(trusted_authserv_ids=frozenset({TRUSTED})),
        day=DAY,
        reserve_for=reserve_for,
    )


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    outcome: Outcome
    codes: tuple[str, ...] = ()
    pages: int | None = None
    attachment: str | None = None
    faxbox: str | None = None
    limits: Limits = field(
        default_factory=lambda: Limits(trusted_authserv_ids=frozenset({TRUSTED}))
    )


def _docx() -> bytes:
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("see attached", "plain"))
    part = MIMEApplication(b"PK\x03\x04 not really word", "octet-stream", name="letter.docx")
    part.add_header("Content-Disposition", "attachment", filename="letter.docx")
    msg.attach(part)
    msg["From"] = ALICE
    msg["To"] = FAX_TO
    return msg.as_bytes()


def _inline_logo_only() -> bytes:
    return outlook(ALICE, ("x.pdf", pdf())).replace(b"application/pdf", b"text/plain")


def _auth(result: str, authserv: str = TRUSTED) -> bytes:
    return gmail(
        "dave@secure.example",
        [("scan.pdf", pdf())],
        headers={"Authentication-Results": f"{authserv}; {result}"},
    )


def _forged_below_ours() -> bytes:
    """The sender's own "pass" under the header our server added on top."""
    raw = gmail(
        "dave@secure.example",
        [("scan.pdf", pdf())],
        headers={"Authentication-Results": f"{TRUSTED}; dmarc=pass header.from=secure.example"},
    )
    return (
        f"Authentication-Results: {TRUSTED}; dmarc=fail header.from=secure.example\r\n".encode()
        + raw
    )


def _to(local: str) -> Callable[[], bytes]:
    return lambda: gmail(ALICE, [("scan.pdf", pdf())], to=f'"{local}"@{REALM}')


def _truncated() -> bytes:
    data = pdf(2)
    return gmail(ALICE, [("cut.pdf", data[: len(data) // 2])])


CASES = [
    # --- mail client shapes
    Case("gmail", lambda: gmail(ALICE, [("scan.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "scan.pdf", "fbx_1"),
    Case("outlook inline logo", lambda: outlook(ALICE, ("letter.pdf", pdf(2))), Outcome.ACCEPTED, (), 2, "letter.pdf"),
    Case("apple inline pdf", lambda: apple_mail(ALICE, ("Scan 12.pdf", pdf())), Outcome.ACCEPTED, (), 1, "Scan 12.pdf"),
    Case("octet-stream named", lambda: octet_stream(ALICE, pdf(), "doc.pdf"), Outcome.ACCEPTED, (), 1, "doc.pdf"),
    Case("octet-stream unnamed, magic", lambda: octet_stream(ALICE, pdf(), None), Outcome.ACCEPTED, (), 1, "(no name)"),
    Case("octet-stream .PDF", lambda: octet_stream(ALICE, pdf(), "SCAN.PDF"), Outcome.ACCEPTED, (), 1, "SCAN.PDF"),
    Case("octet-stream .PDF, not a pdf", lambda: octet_stream(ALICE, b"hello", "SCAN.PDF"), Outcome.REJECTED, ("unreadable_document",)),
    Case("rfc2231 name", lambda: with_attachment_named(ALICE, pdf(), "attachment; filename*=utf-8''%C3%A9t%C3%A9%20%E2%82%AC.pdf"), Outcome.ACCEPTED, (), 1, "été €.pdf"),
    Case("rfc2047 name", lambda: with_attachment_named(ALICE, pdf(), 'attachment; filename="=?utf-8?b?w6lwcmV1dmUucGRm?="'), Outcome.ACCEPTED, (), 1, "épreuve.pdf"),
    Case("forwarded pdf", lambda: forwarded(ALICE, [("inner.pdf", pdf(2))], []), Outcome.ACCEPTED, (), 2, "inner.pdf"),
    Case("forwarded pdf, own pdf wins", lambda: forwarded(ALICE, [("inner.pdf", pdf(2))], [("cover.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "cover.pdf"),
    Case("forwarded, nothing inside", lambda: forwarded(ALICE, [], []), Outcome.REJECTED, ("no_attachment",)),
    Case("multi-page tiff", lambda: tiff_mail(ALICE, tiff(3)), Outcome.ACCEPTED, (), 3, "scan.tif"),
    # --- broken documents
    Case("encrypted pdf", lambda: gmail(ALICE, [("secret.pdf", pdf(password="pw"))]), Outcome.REJECTED, ("encrypted_pdf",)),
    Case("truncated pdf", _truncated, Outcome.REJECTED, ("unreadable_document",)),
    Case("zero-byte", lambda: gmail(ALICE, [("empty.pdf", b"")]), Outcome.REJECTED, ("empty_attachment",)),
    Case("two pdfs", lambda: gmail(ALICE, [("a.pdf", pdf()), ("b.pdf", pdf())]), Outcome.REJECTED, ("too_many_attachments",)),
    Case("two pdfs, merging faxbox", lambda: gmail("frank@example.com", [("a.pdf", pdf()), ("b.pdf", pdf(2))]), Outcome.ACCEPTED, (), 3, "a.pdf, b.pdf", "fbx_5"),
    Case("no attachment", lambda: gmail(ALICE, []), Outcome.REJECTED, ("no_attachment",)),
    Case("only a word file", _docx, Outcome.REJECTED, ("no_attachment",)),
    Case("only an inline logo", _inline_logo_only, Outcome.REJECTED, ("no_attachment",)),
    Case("too large", lambda: gmail(ALICE, [("big.pdf", pdf(3))]), Outcome.REJECTED, ("attachment_too_large",), limits=Limits(max_attachment_bytes=200)),
    Case("too many pages", lambda: gmail(ALICE, [("long.pdf", pdf(3))]), Outcome.REJECTED, ("too_many_pages",), limits=Limits(max_pages=2)),
    # --- senders
    Case("display name, other case", lambda: gmail('"Alice Smith" <ALICE@EXAMPLE.COM>', [("s.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "s.pdf", "fbx_1"),
    Case("alternate address", lambda: gmail("Alice.Notify@example.org", [("s.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "s.pdf", "fbx_1"),
    Case("permission domain", lambda: gmail("zoe@Partner.example", [("s.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "s.pdf", "fbx_2"),
    Case("permission address", lambda: gmail("carol@other.example", [("s.pdf", pdf())]), Outcome.ACCEPTED, (), 1, "s.pdf", "fbx_2"),
    Case("subdomain of permitted domain", lambda: gmail("zoe@sub.partner.example", [("s.pdf", pdf())]), Outcome.IGNORED, ("unknown_sender",)),
    Case("unknown sender", lambda: gmail("mallory@evil.example", [("s.pdf", pdf())]), Outcome.IGNORED, ("unknown_sender",)),
    Case("no From", lambda: gmail(ALICE, [("s.pdf", pdf())]).replace(b"From: alice@example.com\n", b""), Outcome.IGNORED, ("unknown_sender",)),
    Case("disabled faxbox", lambda: gmail("erin@example.com", [("s.pdf", pdf())]), Outcome.REJECTED, ("faxbox_disabled",)),
    Case("disabled, bad number, nothing attached", lambda: gmail("erin@example.com", [], to=f"12345@{REALM}"), Outcome.REJECTED, ("faxbox_disabled", "invalid_number", "no_attachment")),
    # --- authentication results
    Case("no authentication results", lambda: gmail("dave@secure.example", [("s.pdf", pdf())]), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("dmarc pass", lambda: _auth("dmarc=pass header.from=secure.example"), Outcome.ACCEPTED, (), 1, "scan.pdf", "fbx_3"),
    Case("dmarc pass, untrusted authserv-id", lambda: _auth("dmarc=pass header.from=secure.example", "mx.evil.example"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("dmarc pass, look-alike authserv-id", lambda: _auth("dmarc=pass header.from=secure.example", f"{TRUSTED}.evil.example"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("forged pass below our failing header", lambda: _forged_below_ours(), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("spf pass for the from domain", lambda: _auth("spf=pass (sender ok) smtp.mailfrom=bounce@secure.example"), Outcome.ACCEPTED, (), 1),
    Case("spf pass for a subdomain only", lambda: _auth("spf=pass smtp.mailfrom=bounce@mail.secure.example"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("dkim pass", lambda: _auth('dkim=pass header.d=secure.example header.s="s1"; spf=fail'), Outcome.ACCEPTED, (), 1),
    Case("dkim pass for another domain", lambda: _auth("dkim=pass header.d=evil.example; dmarc=fail"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("smtp auth as the sender", lambda: _auth("auth=pass smtp.auth=dave@secure.example"), Outcome.ACCEPTED, (), 1),
    Case("smtp auth as someone else", lambda: _auth("auth=pass smtp.auth=mallory@secure.example"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("dmarc fail", lambda: _auth("dmarc=fail header.from=secure.example; spf=softfail"), Outcome.REJECTED, ("sender_not_authenticated",)),
    Case("no trusted server configured", lambda: _auth("dmarc=pass header.from=secure.example"), Outcome.REJECTED, ("sender_not_authenticated",), limits=Limits()),
    # --- numbers
    Case("national number", _to("2125551234"), Outcome.ACCEPTED, (), 1),
    Case("00 prefix", _to("0012125551234"), Outcome.ACCEPTED, (), 1),
    Case("outside the home countries", _to("00442079460958"), Outcome.REJECTED, ("country_not_allowed",)),
    Case("dashes", _to("212-555-1234"), Outcome.REJECTED, ("invalid_number",)),
    Case("spaces", _to("+44 20 7946 0958"), Outcome.REJECTED, ("invalid_number",)),
    Case("letters", _to("fax"), Outcome.REJECTED, ("invalid_number",)),
    Case("too short", _to("12345"), Outcome.REJECTED, ("invalid_number",)),
    Case("plus inside", _to("+1212+5551234"), Outcome.REJECTED, ("invalid_number",)),
    Case("no country code", _to("442079460958"), Outcome.REJECTED, ("invalid_number",)),
    Case("premium rate", _to("19005551234"), Outcome.REJECTED, ("blocked_number",)),
    # --- automatic mail and strangers
    Case("auto-reply", lambda: gmail(ALICE, [("s.pdf", pdf())], headers={"Auto-Submitted": "auto-replied"}), Outcome.IGNORED, ("automatic_mail",)),
    Case("auto-submitted no", lambda: gmail(ALICE, [("s.pdf", pdf())], headers={"Auto-Submitted": "no"}), Outcome.ACCEPTED, (), 1),
    Case("bulk", lambda: gmail(ALICE, [("s.pdf", pdf())], headers={"Precedence": "bulk"}), Outcome.IGNORED, ("automatic_mail",)),
    Case("list", lambda: gmail(ALICE, [("s.pdf", pdf())], headers={"List-Id": "<x.lists.example>"}), Outcome.IGNORED, ("automatic_mail",)),
    Case("bounce", lambda: gmail(ALICE, [("s.pdf", pdf())], headers={"Return-Path": "<>"}), Outcome.IGNORED, ("automatic_mail",)),
    Case("mailer-daemon", lambda: gmail("MAILER-DAEMON@mx.example.com", [("s.pdf", pdf())]), Outcome.IGNORED, ("automatic_mail",)),
    Case("no realm recipient", lambda: gmail(ALICE, [("s.pdf", pdf())], to="someone@elsewhere.example"), Outcome.IGNORED, ("no_fax_recipient",)),
    Case("realm in Cc", lambda: gmail(ALICE, [("s.pdf", pdf())], to="boss@example.com", headers={"Cc": FAX_TO}), Outcome.ACCEPTED, (), 1),
    Case("realm in X-Original-To", lambda: gmail(ALICE, [("s.pdf", pdf())], to="undisclosed-recipients:;", headers={"X-Original-To": FAX_TO}), Outcome.ACCEPTED, (), 1),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_corpus(case: Case) -> None:
    decision = await decide(case.build(), limits=case.limits)
    codes = (
        (decision.ignored.code,)
        if decision.ignored
        else tuple(r.code.value for r in decision.reasons)
    )
    assert (decision.outcome, codes) == (case.outcome, case.codes)
    if case.pages is not None:
        assert decision.pages == case.pages
    if case.attachment is not None:
        assert decision.attachment == case.attachment
    if case.faxbox is not None:
        assert decision.faxbox is not None
        assert decision.faxbox.id == case.faxbox
    if decision.outcome is Outcome.ACCEPTED:
        assert decision.number is not None
        assert decision.fax_tiff is not None
        assert decision.fax_tiff[:4] == b"II*\x00"
    for reason in decision.reasons:
        assert reason.message.strip()


async def test_bad_number_message_suggests_the_address_that_works() -> None:
    decision = await decide(_to("212-555-1234")())
    (reason,) = decision.reasons
    assert f"Did you mean +12125551234@{REALM}?" in reason.message


async def test_number_refusal_shows_a_valid_address_of_the_realm() -> None:
    decision = await decide(_to("fax")())
    assert f"+12125551234@{REALM}" in decision.reasons[0].message


async def test_no_attachment_lists_what_was_found() -> None:
    decision = await decide(_docx())
    assert "letter.docx" in decision.reasons[0].message
    decision = await decide(_inline_logo_only())
    assert "image001.png" in decision.reasons[0].message
    decision = await decide(forwarded(ALICE, [], []))
    assert "forwarded email" in decision.reasons[0].message


async def test_too_many_attachments_lists_them() -> None:
    decision = await decide(gmail(ALICE, [("a.pdf", pdf()), ("b.pdf", pdf())]))
    assert "a.pdf" in decision.reasons[0].message
    assert "b.pdf" in decision.reasons[0].message


async def test_unknown_sender_is_dead_lettered_not_answered() -> None:
    decision = await decide(gmail("mallory@evil.example", [("s.pdf", pdf())]))
    assert decision.ignored is not None
    assert decision.ignored.dead_letter
    assert "mallory@evil.example" in decision.ignored.message
    auto = await decide(gmail(ALICE, [("s.pdf", pdf())], headers={"Precedence": "junk"}))
    assert auto.ignored is not None
    assert not auto.ignored.dead_letter


async def test_daily_page_limit_of_the_user_counts_reserved_pages() -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=3)
    counters = FakeCounters()
    first = await decide(
        gmail("gina@example.com", [("a.pdf", pdf(2))]), world, None, counters, "f1"
    )
    assert first.outcome is Outcome.ACCEPTED
    again = await decide(
        gmail("gina@example.com", [("a.pdf", pdf(2))]), world, None, counters, "f1"
    )
    assert again.outcome is Outcome.ACCEPTED  # the same fax redelivered counts once
    second = await decide(
        gmail("gina@example.com", [("b.pdf", pdf(2))]), world, None, counters, "f2"
    )
    assert second.outcome is Outcome.REJECTED
    assert [r.code.value for r in second.reasons] == ["daily_page_limit"]
    assert "3 pages a day" in second.reasons[0].message
    assert "00:00 UTC on 28 November 2026" in second.reasons[0].message  # when it resets
    user_id = next(u.id for u in world.users.values() if u.email == "gina@example.com")
    assert counters.pages[f"user:{user_id}:20261127"] == 2


async def test_account_limit_gives_back_the_users_reservation() -> None:
    world = standard_world()
    world.account = world.account.model_copy(update={"daily_page_limit": 1})
    world.add("hank@example.com", user_limit=10)
    counters = FakeCounters()
    decision = await decide(
        gmail("hank@example.com", [("a.pdf", pdf(2))]), world, None, counters, "f1"
    )
    assert [r.code.value for r in decision.reasons] == ["daily_page_limit"]
    assert "organisation" in decision.reasons[0].message
    assert sum(counters.pages.values()) == 0


async def test_dry_run_reads_limits_without_counting() -> None:
    world = standard_world()
    world.add("ivan@example.com", user_limit=1)
    counters = FakeCounters()
    decision = await decide(gmail("ivan@example.com", [("a.pdf", pdf(2))]), world, None, counters)
    assert [r.code.value for r in decision.reasons] == ["daily_page_limit"]
    ok = await decide(gmail("ivan@example.com", [("a.pdf", pdf(1))]), world, None, counters)
    assert ok.outcome is Outcome.ACCEPTED
    assert counters.pages == {}


def test_parser_reports_parts_in_order_with_roles() -> None:
    mail = parse_mail(outlook('"Alice" <Alice@Example.COM>', ("letter.pdf", pdf())))
    assert mail.sender == ALICE
    assert mail.message_id is not None
    assert [(p.role, p.filename) for p in mail.parts] == [
        (PartRole.INLINE_IMAGE, "image001.png"),
        (PartRole.DOCUMENT, "letter.pdf"),
    ]
    assert mail.parts[1].kind is DocumentKind.PDF
    assert mail.parts[0].data == PNG


async def test_summary_is_the_check_email_object() -> None:
    decision = await decide(gmail(ALICE, [("scan.pdf", pdf(2))]))
    assert decision.summary() == {
        "decision": "accepted",
        "number": "+12125551234",
        "numbers": ["+12125551234"],
        "pages": 2,
        "attachment": "scan.pdf",
        "reasons": [],
    }


async def test_the_platform_page_caps_apply_unless_own_caps_say_otherwise() -> None:
    world = standard_world()
    world.add("kim@example.com")  # no cap of her own: the platform's
    world.add("lee@example.com", user_limit=0)  # no cap at all
    limits = Limits(daily_pages_per_user=3, daily_pages_per_account=1000)
    counters = FakeCounters()
    over = await decide(gmail("kim@example.com", [("a.pdf", pdf(4))]), world, limits, counters)
    assert [r.code.value for r in over.reasons] == ["daily_page_limit"]
    assert "at most 3 pages a day" in over.reasons[0].message
    free = await decide(gmail("lee@example.com", [("a.pdf", pdf(4))]), world, limits, counters)
    assert free.outcome is Outcome.ACCEPTED
    unlimited = Limits(daily_pages_per_user=0, daily_pages_per_account=0)
    anything = await decide(gmail("kim@example.com", [("a.pdf", pdf(4))]), world, unlimited)
    assert anything.outcome is Outcome.ACCEPTED


async def test_a_caller_id_the_faxbox_does_not_own_is_not_presented() -> None:
    world = standard_world()
    # Stored before caller ids had to be owned: someone else's number.
    world.add("max@example.com", numbers=["+12125550160", "4711"], caller_id="+13105550199")
    decision = await decide(gmail("max@example.com", [("a.pdf", pdf())]), world)
    assert decision.caller_id == "+12125550160"  # its own number instead
    owned = await decide(gmail(ALICE, [("a.pdf", pdf())]))
    assert owned.caller_id == "+12125550100"
    # The account's number, where the platform lets faxboxes present those.
    world.inventory.add("+13105550199")
    account_wide = Limits(caller_id_scope="account")
    wider = await decide(gmail("max@example.com", [("a.pdf", pdf())]), world, account_wide)
    assert wider.caller_id == "+13105550199"


async def test_an_unproven_sender_is_told_what_was_checked_and_nothing_is_rendered() -> None:
    header = {"Authentication-Results": f"{TRUSTED}; dmarc=fail header.from=secure.example"}
    raw = gmail("dave@secure.example", [("scan.pdf", b"%PDF-1.4 not really")], headers=header)
    decision = await decide(raw)
    (reason,) = decision.reasons  # the broken PDF was never looked at
    assert reason.code.value == "sender_not_authenticated"
    assert f"our mail server ({TRUSTED}) found dmarc=fail" in reason.message
    assert "send it again from your own mail account" in reason.message
    assert decision.owner is not None
    assert decision.owner.email == "dave@secure.example"
    nothing_trusted = await decide(raw, limits=Limits())
    assert "no trusted mail server configured" in nothing_trusted.reasons[0].message
