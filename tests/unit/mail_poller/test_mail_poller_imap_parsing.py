"""Pure parts of the IMAP session: wait-mode decision, response parsing, names, backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from faxbox.mail_poller.imap import (
    ImapError,
    WaitMode,
    choose_wait_mode,
    parse_delimiter,
    parse_fetch,
    parse_search,
    parse_sizes,
    parse_uid_validity,
    push_means_change,
    server_folder_name,
)
from faxbox.mail_poller.keys import ledger_id, message_key
from faxbox.mail_poller.watcher import backoff_delay

DOVECOT_CAPS = {"IMAP4rev1", "IDLE", "MOVE", "UIDPLUS", "LITERAL+"}


@pytest.mark.parametrize(
    ("capabilities", "use_idle", "expected"),
    [
        (DOVECOT_CAPS, True, WaitMode.idle),
        ({"IMAP4rev1", "idle"}, True, WaitMode.idle),
        (DOVECOT_CAPS, False, WaitMode.poll),
        ({"IMAP4rev1", "UIDPLUS"}, True, WaitMode.poll),
        (set(), True, WaitMode.poll),
    ],
)
def test_idle_only_when_advertised_and_wanted(
    capabilities: set[str], use_idle: bool, expected: WaitMode
) -> None:
    assert choose_wait_mode(capabilities, use_idle) is expected


def test_uid_validity_from_select() -> None:
    lines = [
        b"2 EXISTS",
        b"OK [UIDVALIDITY 1795801398] UIDs valid",
        b"OK [UIDNEXT 3] Predicted next UID",
        b"[READ-WRITE] Select completed (0.001 + 0.000 secs).",
    ]
    assert parse_uid_validity(lines) == 1795801398
    with pytest.raises(ImapError):
        parse_uid_validity([b"Select completed"])


def test_search_results() -> None:
    assert parse_search([b"3 1 2", b"Search completed (0.001 secs)."]) == [1, 2, 3]
    assert parse_search([b"", b"Search completed."]) == []
    assert parse_search([b"Search completed."]) == []


def test_sizes_listed_by_uid() -> None:
    # What Dovecot answers to UID FETCH 1:* (UID RFC822.SIZE), as aioimaplib hands it over.
    lines = [
        b"1 FETCH (UID 4 RFC822.SIZE 32)",
        b"2 FETCH (RFC822.SIZE 31457999 UID 9)",
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    assert parse_sizes(lines) == {4: 32, 9: 31457999}
    assert parse_sizes([b"Fetch completed (0.001 + 0.000 secs)."]) == {}


def test_fetch_body_and_internaldate() -> None:
    raw = bytearray(b"Subject: x\r\n\r\nbody\r\n")
    lines = [
        b"4 FETCH (FLAGS (\\Seen))",
        b'5 FETCH (UID 9 INTERNALDATE " 7-Nov-2026 17:43:55 +0100" BODY[] {20}',
        raw,
        b")",
        b"Fetch completed.",
    ]
    fetched = parse_fetch(lines, 9)
    assert fetched is not None
    assert fetched.raw == bytes(raw)
    assert fetched.internal_date == datetime(2026, 11, 7, 16, 43, 55, tzinfo=UTC)
    assert parse_fetch(lines, 10) is None
    assert parse_fetch([b"Fetch completed."], 9) is None


def test_delimiter_and_folder_names() -> None:
    assert parse_delimiter([b'(\\Noselect) "." ""', b"List completed."]) == "."
    assert parse_delimiter([b'(\\Noselect) "/" ""', b"List completed."]) == "/"
    assert parse_delimiter([b'(\\Noselect) NIL ""', b"List completed."]) is None
    assert server_folder_name("Faxbox/Processed", ".") == "Faxbox.Processed"
    assert server_folder_name("Faxbox/Processed", "/") == "Faxbox/Processed"
    assert server_folder_name("Processed", None) == "Processed"


def test_idle_pushes_that_call_for_a_rescan() -> None:
    assert push_means_change([b"1 EXISTS", b"1 RECENT"])
    assert push_means_change([b"BYE Server shutting down."])
    assert not push_means_change([b"OK Still here"])
    assert not push_means_change([b"3 EXPUNGE"])


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = [backoff_delay(n, 0.5, 30, rng=lambda: 1.0) for n in range(0, 10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(3, 0.5, 30, rng=lambda: 0.0) == 1.0
    assert backoff_delay(10_000, 0.5, 30, rng=lambda: 1.0) == 30.0


async def test_message_keys() -> None:
    async def realm(domain: str) -> bool:
        return domain == "fax.example.com"

    raw = b"Message-ID: <X@Y.org>\r\nSubject: s\r\n\r\nbody"
    found = await message_key("box", raw, realm)
    assert (found.key, found.recipient, found.message_id) == (
        "box|all|mid:X@y.org",
        None,
        "<X@Y.org>",
    )
    copy = b"Delivered-To: fax@faxbox.test\r\nX-Original-To: 2125550148@Fax.Example.com\r\n" + raw
    found = await message_key("box", copy, realm)
    assert found.key == "box|2125550148@fax.example.com|mid:X@y.org"
    assert found.recipient == "2125550148@fax.example.com"
    found = await message_key("box", b"Subject: s\r\n\r\nbody", realm)
    assert found.key.startswith("box|all|sha256:")
    assert found.message_id is None
    assert (await message_key("box", b"Message-ID:   \r\n\r\nbody", realm)).key.startswith(
        "box|all|sha256:"
    )
    # Only the headers of a mail over the cap are known: its size joins the hash.
    headers = b"Subject: s\r\n\r\n"
    assert (await message_key("box", headers, realm, 10)).key != (
        await message_key("box", headers, realm, 11)
    ).key
    assert ledger_id("box", 5, 9) == "box|5|9"
