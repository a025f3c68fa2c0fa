"""A TLS terminator in front of the real Dovecot (which runs without TLS here).

Like stunnel: ``implicit`` speaks TLS from the first byte (IMAPS); ``starttls`` relays
the plain greeting, adds STARTTLS to the capabilities it relays, answers the client's
STARTTLS itself and then switches the client side to TLS. Everything else is relayed
byte for byte to Dovecot. The certificate is a fresh self-signed one made by openssl.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

_STARTTLS = re.compile(rb"^(\S+) STARTTLS\r\n$", re.IGNORECASE)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from ``reader`` to ``writer`` until either side ends; then close ``writer``."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(
    upstream_host: str, upstream_port: int, cert: Path, key: Path, mode: str
) -> AsyncIterator[int]:
    """Serve on 127.0.0.1:<port> (yielded) until the block ends."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # A client that gives up on the certificate just goes away: nothing to report.
        with contextlib.suppress(ConnectionError, OSError):
            await serve(client_r, client_w)

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(upstream_host, upstream_port)
        if mode == "starttls":
            # Relay line by line until the client asks for STARTTLS.
            async def down() -> None:
                while line := await server_r.readline():
                    if b"CAPABILITY" in line and b"STARTTLS" not in line:
                        line = line.replace(b"IMAP4rev1", b"IMAP4rev1 STARTTLS", 1)
                    client_w.write(line)
                    await client_w.drain()

            relay = asyncio.create_task(down())
            while True:
                line = await client_r.readline()
                if not line:
                    relay.cancel()
                    server_w.close()
                    return
                if match := _STARTTLS.match(line):
                    await asyncio.sleep(0.05)  # let pending server lines go out first
                    relay.cancel()
                    client_w.write(match.group(1) + b" OK Begin TLS negotiation now\r\n")
                    await client_w.drain()
                    await client_w.start_tls(context)
                    break
                server_w.write(line)
                await server_w.drain()
        for coro in (pipe(client_r, server_w), pipe(server_r, client_w)):
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=context if mode == "implicit" else None
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
