"""A relay in front of the real Dovecot that sees every command, and may never answer
the reads of one UID.

Every byte goes through unchanged, except a client command that reads the stalled UID
(``UID FETCH <uid> ...``): it is swallowed, so the client waits until its own command
timeout, as it would for a server stuck on a broken message. Every command line the
client sent is kept in ``commands``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.integration.mail_poller.mail_poller_tls import pipe


@dataclass
class Stall:
    uid: int | None  # None: nothing is swallowed
    swallowed: list[bytes] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)

    def stalls(self, line: bytes) -> bool:
        if self.uid is None:
            return False
        return re.match(rb"^\S+ UID FETCH %d " % self.uid, line, re.IGNORECASE) is not None


async def _commands(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stall: Stall
) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.LimitOverrunError):
        while line := await reader.readline():
            stall.commands.append(line)
            if stall.stalls(line):
                stall.swallowed.append(line)
                continue
            writer.write(line)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


@contextlib.asynccontextmanager
async def stalling_proxy(host: str, port: int, stall: Stall) -> AsyncIterator[int]:
    """Serve on 127.0.0.1:<port> (yielded) until the block ends."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        both = [
            asyncio.create_task(pipe(server_r, client_w)),
            asyncio.create_task(_commands(client_r, server_w, stall)),
        ]
        tasks.update(both)
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        for task in both:
            task.cancel()
        for writer in (client_w, server_w):
            with contextlib.suppress(Exception):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
