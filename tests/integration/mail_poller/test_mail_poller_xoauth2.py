"""XOAUTH2 login with a token from a command, refreshed after the server refuses it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.mail_poller.auth import TokenSource
from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.imap import AuthFailed, ImapSession
from tests.integration.mail_poller.mail_poller_oauth_front import oauth_front
from tests.integration.mail_poller.mail_poller_support import (
    Imap,
    leaving_folders,
    make_mail,
    own_folder,
    poller_user,
)
from tests.support import ImapServer

pytestmark = pytest.mark.integration


@pytest.fixture
def imap(imap_server: ImapServer) -> Imap:
    return Imap(imap_server, poller_user(imap_server))


@pytest.fixture
async def folder(imap: Imap) -> AsyncIterator[str]:
    async with own_folder(imap) as name:
        yield name


async def test_refused_token_is_replaced_by_a_fresh_one(
    tmp_path: Path, imap_server: ImapServer, imap: Imap, folder: str
) -> None:
    # The "refresh script": prints whatever token the identity provider issued last.
    issued = tmp_path / "issued-token"
    issued.write_text("expired-token")
    raw = make_mail()
    await imap.append(folder, raw)
    async with oauth_front(
        imap_server.host, imap_server.port, imap_server.password, {"fresh-token"}
    ) as (port, seen):
        config = MailboxConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "username": imap.user,
                "auth": "xoauth2",
                "token_command": f"{sys.executable} -c \"print(open('{issued}').read())\"",
                "folder": folder,
                **leaving_folders(folder),
                "command_timeout_s": 20,
            }
        )
        tokens = TokenSource(config)

        refused = ImapSession(config, tokens)
        with pytest.raises(AuthFailed, match="refused"):  # answered, not timed out
            await refused.open()
        await refused.close()

        issued.write_text("fresh-token")
        session = ImapSession(config, tokens)
        await session.open()
        try:
            [uid] = await session.search_all()
            fetched = await session.fetch(uid)
            assert fetched is not None
            assert fetched.raw == raw
        finally:
            await session.close()

    assert seen == ["expired-token", "fresh-token"]
