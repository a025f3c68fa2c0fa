"""Credentials for IMAP: a password (setting or file) or an XOAUTH2 access token.

Tokens come from a file (kept fresh by something else, e.g. a sidecar) or from a
command's stdout (e.g. ``oauth2l fetch …`` or a small refresh script). A token is reused
until shortly before it expires, and dropped at once when the server refuses it.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Callable

from faxbox.mail_poller.config import MailboxConfig

# Refresh this long before the token's expiry, so a login never races the deadline.
REFRESH_MARGIN_S = 120.0


class TokenError(Exception):
    pass


class TokenSource:
    def __init__(self, config: MailboxConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    async def get(self) -> str:
        margin = min(REFRESH_MARGIN_S, self.config.token_lifetime_s / 10)
        if self._token is None or self._clock() >= self._expires_at - margin:
            self._token, lifetime = await self._read()
            self._expires_at = self._clock() + lifetime
        return self._token

    def invalidate(self) -> None:
        """The server refused the token: fetch a new one before the next login."""
        self._token = None

    async def _read(self) -> tuple[str, float]:
        if self.config.token_file is not None:
            text = await asyncio.to_thread(self.config.token_file.read_text)
        else:
            assert self.config.token_command is not None
            text = await _run(self.config.token_command, self.config.command_timeout_s)
        return parse_token(text, self.config.token_lifetime_s)


def parse_token(text: str, default_lifetime_s: float) -> tuple[str, float]:
    """A bare token, or JSON ``{"access_token": …, "expires_in": seconds}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
            token = str(data["access_token"]).strip()
            lifetime = float(data.get("expires_in", default_lifetime_s))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"token JSON without a usable access_token: {exc}") from None
    else:
        token, lifetime = text, default_lifetime_s
    if not token or any(c.isspace() for c in token):
        raise TokenError("token source gave an empty or malformed token")
    return token, lifetime


async def _run(command: str, timeout_s: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TokenError(f"token command timed out after {timeout_s}s") from None
    if process.returncode != 0:
        raise TokenError(
            f"token command exited {process.returncode}: {stderr.decode(errors='replace')[:200]}"
        )
    return stdout.decode()
