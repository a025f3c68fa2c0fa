"""Credentials: passwords from settings or a file, XOAUTH2 tokens from a file or a command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from faxbox.mail_poller.auth import TokenError, TokenSource, parse_token
from faxbox.mail_poller.config import MailboxConfig


def test_parse_token_bare_and_json() -> None:
    assert parse_token("abc.def\n", 3000) == ("abc.def", 3000)
    assert parse_token(json.dumps({"access_token": "t0k", "expires_in": 60}), 3000) == ("t0k", 60)
    for bad in ("", "two words", "{not json", json.dumps({"token": "x"})):
        with pytest.raises(TokenError):
            parse_token(bad, 3000)


async def test_token_file_is_cached_refreshed_before_expiry_and_after_refusal(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    now = [0.0]
    config = MailboxConfig(
        host="imap.example.com",
        username="fax@example.com",
        auth="xoauth2",
        token_file=token_file,
        token_lifetime_s=1000,
    )
    tokens = TokenSource(config, clock=lambda: now[0])

    assert await tokens.get() == "first"
    token_file.write_text("second\n")
    now[0] = 850.0
    assert await tokens.get() == "first"  # still well inside its lifetime
    now[0] = 950.0
    assert await tokens.get() == "second"  # within the refresh margin of the expiry
    token_file.write_text("third\n")
    tokens.invalidate()
    assert await tokens.get() == "third"


async def test_token_command_stdout(tmp_path: Path) -> None:
    script = "import json; print(json.dumps({'access_token': 'from-cmd', 'expires_in': 30}))"
    config = MailboxConfig(
        host="imap.example.com",
        username="fax@example.com",
        auth="xoauth2",
        token_command=f'{sys.executable} -c "{script}"',
    )
    assert await TokenSource(config).get() == "from-cmd"

    failing = config.model_copy(update={"token_command": f"{sys.executable} -c 'exit(3)'"})
    with pytest.raises(TokenError, match="exited 3"):
        await TokenSource(failing).get()


def test_mailbox_config_rules(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = MailboxConfig(host="h", port=143, security="none", username="u", password_file=secret)
    assert config.password_value() == "s3cret"
    assert config.name == "u@h:143/INBOX"
    assert config.processed_folder == "Faxbox/Processed"
    with pytest.raises(ValidationError, match="LOGIN needs"):
        MailboxConfig(host="h", username="u")
    with pytest.raises(ValidationError, match="exactly one"):
        MailboxConfig(host="h", username="u", auth="xoauth2")


def test_settings_read_mailboxes_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from faxbox.mail_poller.service import Settings

    monkeypatch.setenv(
        "FAXBOX_MAIL_POLLER_MAILBOXES",
        json.dumps([{"host": "imap.example.com", "username": "fax@example.com", "password": "pw"}]),
    )
    monkeypatch.setenv("FAXBOX_MAIL_POLLER_LEASE_TTL_S", "8")
    settings = Settings()
    [mailbox] = settings.mail_poller_mailboxes
    assert mailbox.security == "tls"
    assert mailbox.port == 993
    assert settings.mail_poller_lease_ttl_s == 8
    assert settings.test_crash_at is None
