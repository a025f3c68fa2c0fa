"""The local Dovecot the intake will read: login, APPEND, IDLE capability, fetch back."""

from __future__ import annotations

import imaplib
import uuid

import pytest

from tests.support import ImapServer

pytestmark = pytest.mark.integration


def test_dovecot_accepts_login_append_and_fetch(imap_server: ImapServer) -> None:
    host, port = imap_server.host, imap_server.port
    user, password = imap_server.users[0], imap_server.password
    token = uuid.uuid4().hex
    raw = (
        f"From: alice@example.com\r\nTo: +12125551234@fax.example.com\r\n"
        f"Subject: {token}\r\nMessage-ID: <{token}@example.com>\r\n\r\nhello\r\n"
    ).encode()
    with imaplib.IMAP4(host, port, timeout=10) as imap:
        imap.login(user, password)
        assert "IDLE" in imap.capabilities
        status, _ = imap.append("INBOX", None, None, raw)
        assert status == "OK"
        imap.select("INBOX")
        status, found = imap.search(None, "HEADER", "Subject", token)
        assert status == "OK"
        ids = found[0].split()
        assert len(ids) == 1
        status, fetched = imap.fetch(ids[0], "(RFC822)")
        body = fetched[0]
        assert isinstance(body, tuple)
        assert token.encode() in body[1]
        imap.store(ids[0], "+FLAGS", "\\Deleted")
        imap.expunge()


def test_wrong_password_is_refused(imap_server: ImapServer) -> None:
    with (
        imaplib.IMAP4(imap_server.host, imap_server.port, timeout=10) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login(imap_server.users[0], "wrong-password")
