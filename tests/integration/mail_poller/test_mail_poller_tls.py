"""TLS and STARTTLS sessions (through a TLS terminator in front of the real Dovecot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.imap import ImapError, ImapSession
from faxbox.mail_poller.ports import Destination
from tests.integration.mail_poller.mail_poller_support import (
    Imap,
    leaving_folders,
    make_mail,
    own_folder,
    poller_user,
)
from tests.integration.mail_poller.mail_poller_tls import make_certificate, tls_proxy
from tests.support import ImapServer

pytestmark = pytest.mark.integration


@pytest.fixture
def imap(imap_server: ImapServer) -> Imap:
    return Imap(imap_server, poller_user(imap_server))


@pytest.fixture
async def folder(imap: Imap) -> AsyncIterator[str]:
    async with own_folder(imap) as name:
        yield name


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _config(
    imap_server: ImapServer, imap: Imap, folder: str, port: int, security: str, ca: Path
) -> MailboxConfig:
    return MailboxConfig.model_validate(
        {
            "host": "localhost",
            "port": port,
            "security": security,
            "ca_file": ca,
            "username": imap.user,
            "password": imap_server.password,
            "folder": folder,
            **leaving_folders(folder),
            "command_timeout_s": 10,
        }
    )


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_session_over_tls_fetches_and_moves(
    mode: str,
    certificate: tuple[Path, Path],
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
) -> None:
    cert, key = certificate
    raw = make_mail()
    await imap.append(folder, raw)
    security = "tls" if mode == "implicit" else "starttls"
    async with tls_proxy(imap_server.host, imap_server.port, cert, key, mode) as port:
        session = ImapSession(_config(imap_server, imap, folder, port, security, cert))
        await session.open()
        try:
            transport = session.client.protocol.transport
            assert transport.get_extra_info("ssl_object") is not None
            assert "IDLE" in session.capabilities
            [uid] = await session.search_all()
            fetched = await session.fetch(uid)
            assert fetched is not None
            assert fetched.raw == raw
            assert await session.size(uid) == len(raw)
            header = await session.fetch_header(uid, 1_000_000)
            assert header is not None
            assert header.raw == raw[: raw.index(b"\r\n\r\n") + 4]
            cut = await session.fetch_header(uid, 20)
            assert cut is not None
            assert cut.raw == raw[:20]
            await session.move(uid, Destination.processed)
            assert await session.search_all() == []
        finally:
            await session.close()
    assert await imap.messages(f"{folder}-processed") == [raw]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_untrusted_certificate_is_refused(
    mode: str,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
) -> None:
    cert, key = certificate
    other_ca, _ = make_certificate(tmp_path)
    security = "tls" if mode == "implicit" else "starttls"
    async with tls_proxy(imap_server.host, imap_server.port, cert, key, mode) as port:
        session = ImapSession(_config(imap_server, imap, folder, port, security, other_ca))
        try:
            with pytest.raises(ImapError, match="certificate verify failed"):
                await session.open()
        finally:
            await session.close()
