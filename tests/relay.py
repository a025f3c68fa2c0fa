"""A private instance of the project's mail relay (deploy/local/mailrelay.py) for a test.

It runs the relay of this checkout on ports of its own, against the machine's Dovecot:
LMTP for delivery and Dovecot's auth-client socket for the submission port's AUTH (so
the users and passwords are Dovecot's passwd-file's, e.g. alice@faxbox.test). Tests use
it rather than the shared relay of ``deploy/local/up``, which may run another version.
"""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from tests.support import free_port, servers_required

REPO = Path(__file__).resolve().parents[1]
AUTHSERV_ID = "relay.faxbox.test"


def dovecot_auth_socket() -> Path:
    """Dovecot's auth-client socket: from var/env, else from Dovecot's generated config."""
    configured = os.environ.get("FAXBOX_LOCAL_DOVECOT_AUTH")
    if configured:
        return Path(configured)
    conf = REPO / "var" / "dovecot" / "dovecot.conf"
    found = re.search(r"^base_dir = (.+)$", conf.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no base_dir in {conf}; run deploy/local/up")
    return Path(found.group(1).strip()) / "auth-client"


@dataclass
class LocalRelay:
    directory: Path
    catch_all: dict[str, str] = field(default_factory=dict)
    local_domains: tuple[str, ...] = ("faxbox.test",)
    authserv_id: str = AUTHSERV_ID
    port: int = field(default_factory=free_port)
    submission_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "relay.log"

    def start(self) -> LocalRelay:
        self.directory.mkdir(parents=True, exist_ok=True)
        lmtp = os.environ.get("FAXBOX_LOCAL_LMTP_PORT", "1124")
        command = [
            sys.executable,
            str(REPO / "deploy" / "local" / "mailrelay.py"),
            *("--port", str(self.port), "--lmtp-port", lmtp),
            *("--submission-port", str(self.submission_port)),
            *("--dovecot-auth", str(dovecot_auth_socket())),
            *("--authserv-id", self.authserv_id),
            *("--sink", str(self.directory / "outbound")),
        ]
        for domain in self.local_domains:
            command += ["--local-domain", domain]
        for domain, mailbox in self.catch_all.items():
            command += ["--catch-all", f"{domain}={mailbox}"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self.log.open("wb")
        )
        deadline = time.monotonic() + 15
        for port in (self.port, self.submission_port):
            while True:
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
                        smtp.noop()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        message = f"the relay did not start:\n{self.log.read_text()}"
                        if servers_required():
                            raise AssertionError(message) from None
                        raise
                    time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def submit(
        self,
        message: EmailMessage | bytes,
        login: str,
        password: str,
        sender: str | None = None,
        recipients: list[str] | None = None,
    ) -> None:
        """Send through the submission port, logged in as ``login``."""
        with smtplib.SMTP("127.0.0.1", self.submission_port, timeout=30) as smtp:
            smtp.login(login, password)
            _send(smtp, message, sender or login, recipients)

    def send_unauthenticated(
        self, message: EmailMessage | bytes, sender: str, recipients: list[str] | None = None
    ) -> None:
        """Send to the MX port without logging in, as any stranger on the internet can."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            _send(smtp, message, sender, recipients)


def _send(
    smtp: smtplib.SMTP, message: EmailMessage | bytes, sender: str, recipients: list[str] | None
) -> None:
    if isinstance(message, bytes):
        assert recipients, "raw bytes need their recipients"
        refused = smtp.sendmail(sender, recipients, message)
    else:
        refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    assert refused == {}, refused
