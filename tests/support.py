"""Helpers for tests that need the real servers (imported by conftest and tests)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from faxbox.shared.contracts import DocumentRef, MailReceived


def servers_required() -> bool:
    return bool(os.environ.get("FAXBOX_REQUIRE_SERVERS") or os.environ.get("CI"))


def require_server(name: str, host: str, port: int) -> None:
    """Skip (developer machine) or fail (CI) when nothing listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc}); run deploy/local/up"
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class RabbitServer:
    amqp_url: str
    api_url: str
    user: str
    password: str

    def api(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def url_for_vhost(self, vhost: str) -> str:
        parts = urllib.parse.urlsplit(self.amqp_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, "")))


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    users: tuple[str, ...]
    password: str


def sample_mail_received(n: int = 1) -> MailReceived:
    """A MailReceived whose raw mail reference is well-formed; the mail itself is not stored."""
    return MailReceived(
        fax_id=f"fax{n}",
        mailbox="INBOX",
        uid_validity=1,
        uid=n,
        raw=DocumentRef(
            account_id="intake",
            month="202611",
            file_id=f"raw{n}",
            filename="mail.eml",
            content_type="message/rfc822",
            length=10,
            sha256=hashlib.sha256(b"x").hexdigest(),
        ),
        received_at=datetime.now(UTC),
    )
