"""SmtpMailer against a real SMTP server (aiosmtpd): STARTTLS, implicit TLS, AUTH, errors."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from faxbox.notifier.mailer import SmtpMailer
from faxbox.notifier.ports import MailDeferred, MailRefused
from tests.support import free_port

pytestmark = pytest.mark.integration


@dataclass
class Inbox:
    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


def message() -> EmailMessage:
    m = EmailMessage()
    m["From"] = "fax@faxbox.test"
    m["To"] = "alice@example.com"
    m["Subject"] = "test"
    m.set_content("hello")
    return m


def authenticator(inbox: Inbox) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"fax", b"secret")
        if ok:
            inbox.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    return check


@pytest.fixture
def starttls_server(certificate: Certificate) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=authenticator(inbox),
        auth_required=True,
    )
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def implicit_tls_server(certificate: Certificate) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        ssl_context=certificate.server_context(),
        authenticator=authenticator(inbox),
        auth_required=True,
        auth_require_tls=False,  # the whole connection is TLS already
    )
    controller.start()
    yield inbox, port
    controller.stop()


async def test_starttls_with_auth(
    starttls_server: tuple[Inbox, int], certificate: Certificate
) -> None:
    inbox, port = starttls_server
    mailer = SmtpMailer(
        host="127.0.0.1", port=port, security="starttls", username="fax", password="secret",
        tls_context=certificate.client_context(),
    )  # fmt: skip
    await mailer.send(message(), ["alice@example.com"])
    assert [rcpt for rcpt, _ in inbox.messages] == [["alice@example.com"]]
    assert inbox.logins == ["fax"]


# aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the whole session is TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls_with_auth(
    implicit_tls_server: tuple[Inbox, int], certificate: Certificate
) -> None:
    inbox, port = implicit_tls_server
    mailer = SmtpMailer(
        host="127.0.0.1", port=port, security="tls", username="fax", password="secret",
        tls_context=certificate.client_context(),
    )  # fmt: skip
    await mailer.send(message(), ["alice@example.com"])
    assert len(inbox.messages) == 1
    assert inbox.logins == ["fax"]


async def test_a_wrong_password_is_refused_with_the_server_answer(
    starttls_server: tuple[Inbox, int], certificate: Certificate
) -> None:
    _inbox, port = starttls_server
    mailer = SmtpMailer(
        host="127.0.0.1", port=port, security="starttls", username="fax", password="wrong",
        tls_context=certificate.client_context(),
    )  # fmt: skip
    with pytest.raises(MailRefused, match="535"):
        await mailer.send(message(), ["alice@example.com"])


async def test_an_untrusted_certificate_is_not_accepted(
    starttls_server: tuple[Inbox, int],
) -> None:
    _inbox, port = starttls_server
    mailer = SmtpMailer(host="127.0.0.1", port=port, security="starttls", timeout_s=5)
    with pytest.raises(MailDeferred):
        await mailer.send(message(), ["alice@example.com"])


async def test_no_server_is_a_deferral() -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=free_port(), security="none", timeout_s=5)
    with pytest.raises(MailDeferred, match="unreachable"):
        await mailer.send(message(), ["alice@example.com"])
