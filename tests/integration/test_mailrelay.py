"""The local mail relay as a submission server: AUTH checked by the real Dovecot, the
proof it stamps, and the forged proofs it strips (deploy/local/mailrelay.py, a private
instance per module; mail for other domains lands in its sink, read back here)."""

from __future__ import annotations

import os
import smtplib
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.relay import AUTHSERV_ID, LocalRelay
from tests.support import ImapServer

pytestmark = pytest.mark.integration

ALICE = "alice@faxbox.test"
OUTSIDE = "someone@elsewhere.example"  # not a local domain: written to the sink


@pytest.fixture(scope="module")
def relay(
    imap_server: ImapServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRelay]:
    relay = LocalRelay(tmp_path_factory.mktemp("relay")).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def password() -> str:
    return os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test")


def mail(*headers: str, sender: str = ALICE) -> tuple[EmailMessage, str]:
    message = EmailMessage()
    for header in headers:
        name, _, value = header.partition(": ")
        message[name] = value
    message["From"] = sender
    message["To"] = OUTSIDE
    marker = uuid.uuid4().hex
    message["Subject"] = marker
    message.set_content("hello\n")
    return message, marker


def delivered(relay: LocalRelay, marker: str) -> EmailMessage:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in (relay.directory / "outbound").glob("*.eml"):
            raw = path.read_bytes()
            if marker.encode() in raw:
                # The sink's own first line names the recipient; the mail follows.
                return message_from_bytes(raw.split(b"\r\n", 1)[1], _class=EmailMessage)
        time.sleep(0.05)
    raise AssertionError(f"no mail {marker} in the sink; relay log:\n{relay.log.read_text()}")


def results(message: EmailMessage) -> list[str]:
    return [" ".join(str(v).split()) for v in message.get_all("Authentication-Results", [])]


def test_submission_needs_a_dovecot_login_first(relay: LocalRelay, password: str) -> None:
    # A refusal takes Dovecot's failure delay (2 s or more): a generous timeout, and one
    # mechanism per attempt (smtplib's login() would try each in turn).
    with smtplib.SMTP("127.0.0.1", relay.submission_port, timeout=60) as smtp:
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"]
        assert "LOGIN" in smtp.esmtp_features["auth"]
        code, _ = smtp.mail(ALICE)
        assert code == 530  # authentication required
        for login, secret in ((ALICE, "not the password"), ("nobody@faxbox.test", password)):
            smtp.user, smtp.password = login, secret
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.auth("PLAIN", smtp.auth_plain)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_logged_in_sender_is_stamped(relay: LocalRelay, password: str, mechanism: str) -> None:
    message, marker = mail()
    with smtplib.SMTP("127.0.0.1", relay.submission_port, timeout=60) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = ALICE, password
        code, _ = smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
        assert code == 235
        assert smtp.send_message(message, ALICE, [OUTSIDE]) == {}
    got = delivered(relay, marker)
    assert results(got) == [f"{AUTHSERV_ID}; auth=pass smtp.auth={ALICE}"]
    # On top: the first header of the mail as delivered.
    assert next(iter(got.keys())) == "Authentication-Results"


def test_headers_claiming_the_relay_are_stripped_and_others_kept(
    relay: LocalRelay, password: str
) -> None:
    forged = f"{AUTHSERV_ID}; auth=pass smtp.auth=ceo@faxbox.test"
    look_alike = f"{AUTHSERV_ID}.evil.example; dmarc=pass header.from=faxbox.test"
    message, marker = mail(
        f"Authentication-Results: {forged}",
        f"Authentication-Results: {look_alike}",
        f"Authentication-Results: (comment) {AUTHSERV_ID.upper()} 1; dkim=pass header.d=x",
    )
    relay.submit(message, ALICE, password, recipients=[OUTSIDE])
    assert results(delivered(relay, marker)) == [
        f"{AUTHSERV_ID}; auth=pass smtp.auth={ALICE}",
        look_alike,
    ]


def test_mail_without_a_login_carries_no_proof(relay: LocalRelay) -> None:
    """The MX port takes mail from anyone, and nothing it passes on claims otherwise."""
    message, marker = mail(f"Authentication-Results: {AUTHSERV_ID}; auth=pass smtp.auth={ALICE}")
    relay.send_unauthenticated(message, ALICE, [OUTSIDE])
    assert results(delivered(relay, marker)) == []


def test_the_relay_refuses_to_start_submission_without_dovecot(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.relay import REPO

    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "local" / "mailrelay.py"),
            *("--sink", str(tmp_path), "--submission-port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "--dovecot-auth" in done.stderr
