"""An XOAUTH2 front for the real Dovecot (which only does LOGIN/PLAIN here).

It answers ``AUTHENTICATE XOAUTH2`` the way Gmail and Microsoft 365 do: a good token
is accepted (the front then logs in to Dovecot with the user's password, and relays
Dovecot's answer); a bad one gets a ``+ <base64 JSON>`` challenge, and the tagged NO
only after the client sent the empty line that ends the exchange. Every other byte
is relayed to and from Dovecot unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator

from tests.integration.mail_poller.mail_poller_tls import pipe

_AUTH = re.compile(rb"^(\S+) AUTHENTICATE XOAUTH2 (\S+)\r\n$", re.IGNORECASE)
_ERROR = base64.b64encode(
    json.dumps({"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}).encode()
)


@contextlib.asynccontextmanager
async def oauth_front(
    upstream_host: str, upstream_port: int, password: str, valid_tokens: set[str]
) -> AsyncIterator[tuple[int, list[str]]]:
    """Yields (port, tokens seen in the order clients presented them)."""
    seen: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(upstream_host, upstream_port)

        async def down() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while line := await server_r.readline():
                    if b"CAPABILITY" in line and b"AUTH=XOAUTH2" not in line:
                        line = line.replace(b"IMAP4rev1", b"IMAP4rev1 AUTH=XOAUTH2", 1)
                    client_w.write(line)
                    await client_w.drain()
            client_w.close()

        spawn(down())
        while line := await client_r.readline():
            match = _AUTH.match(line)
            if match is None:
                server_w.write(line)
                await server_w.drain()
                continue
            tag, sasl = match.groups()
            fields = dict(
                part.split("=", 1)
                for part in base64.b64decode(sasl).decode().split("\x01")
                if "=" in part
            )
            user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
            seen.append(token)
            if token in valid_tokens:
                server_w.write(tag + f' LOGIN "{user}" "{password}"\r\n'.encode())
                await server_w.drain()
                break  # from here on, a plain relay
            client_w.write(b"+ " + _ERROR + b"\r\n")
            await client_w.drain()
            if await client_r.readline() != b"\r\n":
                break
            client_w.write(tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n")
            await client_w.drain()
        await pipe(client_r, server_w)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await serve(client_r, client_w)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
