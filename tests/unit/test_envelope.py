"""faxbox.shared.envelope: the header block, a copy's envelope recipient, a mail's identity."""

from __future__ import annotations

from faxbox.shared.envelope import (
    addresses,
    envelope_candidates,
    envelope_recipient,
    intake_key,
    message_identity,
    normalize_message_id,
    read_headers,
)

REALMS = {"fax.example.com", "other.fax.example"}


async def is_realm(domain: str) -> bool:
    return domain in REALMS


def test_headers_are_read_unfolded_in_order_names_lower_cased() -> None:
    raw = (
        b"From alice@example.com Mon Dec  7 03:03:25 2026\r\n"  # an mbox line: not a field
        b"Delivered-To: fax@faxbox.test\r\n"
        b"Received: from a\r\n\tby b;\r\n Mon, 7 Dec 2026\r\n"
        b"To: +12125550147@fax.example.com,\r\n 2125550148@fax.example.com\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\nTo: not a header\r\n"
    )
    headers = read_headers(raw)
    assert [name for name, _ in headers.fields] == ["delivered-to", "received", "to", "subject"]
    assert headers.first("received") == "from a\tby b; Mon, 7 Dec 2026"
    assert headers.values("to") == ["+12125550147@fax.example.com, 2125550148@fax.example.com"]
    assert headers.body_offset is not None
    assert raw[headers.body_offset :] == b"body\r\nTo: not a header\r\n"
    assert headers.size == raw.index(b"\r\n\r\n")


def test_a_long_header_is_cut_and_the_block_measured_whole() -> None:
    raw = b"To: " + b"a@b.c, " * 100_000 + b"\r\nFrom: x@y.z\r\n\r\n"
    headers = read_headers(raw, max_value_bytes=1000)
    assert len(headers.values("to")[0]) <= 1000
    assert headers.first("from") == "x@y.z"
    assert headers.size > 700_000


def test_addresses_unquote_local_parts_and_lower_case_domains() -> None:
    assert addresses(['"+44 20 7946 0958"@Fax.Example.COM, Bob <Bob@Example.com>']) == [
        "+44 20 7946 0958@fax.example.com",
        "Bob@example.com",
    ]
    assert addresses(["a@b.c, d@e.f, g@h.i"], limit=2) == ["a@b.c", "d@e.f"]
    assert addresses(["undisclosed-recipients:;"]) == []


async def test_the_topmost_realm_envelope_header_is_the_recipient() -> None:
    raw = (
        b"Delivered-To: fax@faxbox.test\r\n"  # the mailbox: no realm
        b"X-Original-To: +12125550147@Fax.Example.com\r\n"  # our MTA's: the recipient
        b"Received: by mx for <2125550149@fax.example.com>; today\r\n"  # never trusted
        b"X-Envelope-To: 2125550148@fax.example.com\r\n"  # lower: written before us
        b"From: a@b.c\r\n\r\n"
    )
    candidates = envelope_candidates(read_headers(raw))
    assert candidates == ["+12125550147@fax.example.com", "2125550148@fax.example.com"]
    assert await envelope_recipient(candidates, is_realm) == "+12125550147@fax.example.com"


async def test_an_address_without_a_digit_names_no_number() -> None:
    raw = b"Delivered-To: intake@fax.example.com\r\nEnvelope-To: fax@faxbox.test\r\n\r\n"
    assert envelope_candidates(read_headers(raw)) == []
    assert await envelope_recipient([], is_realm) is None


async def test_each_domain_is_looked_up_once() -> None:
    asked: list[str] = []

    async def counting(domain: str) -> bool:
        asked.append(domain)
        return False

    await envelope_recipient(["1@x.test", "2@x.test", "3@y.test"], counting)
    assert asked == ["x.test", "y.test"]


def test_message_ids_normalize() -> None:
    assert normalize_message_id("<Abc.Def@Mail.Example.COM>") == "Abc.Def@mail.example.com"
    assert normalize_message_id("  < a@b >  (comment)") == "a@b"
    assert normalize_message_id("<>") is None


def test_identity_is_the_message_id_or_what_the_sender_wrote() -> None:
    sent = b"From: a@b.c\r\nTo: 1@fax.example.com\r\nSubject: s\r\n\r\nbody"
    hop1 = b"Received: by one\r\nX-Original-To: 1@fax.example.com\r\n" + sent
    hop2 = b"Received: by two\r\nReceived: by one\r\nDelivered-To: x@y\r\n" + sent
    first = message_identity(read_headers(hop1), hop1)
    assert first.startswith("sha256:")
    assert message_identity(read_headers(hop2), hop2) == first  # trace headers do not count
    other = sent.replace(b"body", b"other body")
    assert message_identity(read_headers(other), other) != first
    with_id = b"Message-ID: <Q@X.Y>\r\n" + sent
    assert message_identity(read_headers(with_id), with_id) == "mid:Q@x.y"


def test_intake_key() -> None:
    assert intake_key("box", None, "mid:a@b") == "box|all|mid:a@b"
    assert intake_key("box", "+1@Fax.Example.com", "mid:a@b") == "box|+1@fax.example.com|mid:a@b"
