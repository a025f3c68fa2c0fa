"""A real HTTP server that receives webhooks in tests, as a customer's endpoint would.

uvicorn serving a small ASGI app on 127.0.0.1: every POST is recorded with its headers
and raw body, answered with the next status scripted for its path (then 200), after an
optional delay, so tests can make an endpoint fail, be slow, and count how many requests
it had open at once. ``verify`` checks a request's signature the way docs/api.md tells
receivers to: Ed25519 over ``timestamp + "." + raw body``, with the account's public
key, through the cryptography library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.support import free_port

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verify(self, public_key_b64: str, max_age_s: float = 300) -> bool:
        """What a receiver must do: the signature over timestamp.body, and a fresh timestamp."""
        timestamp = self.headers.get("faxbox-timestamp", "")
        signature = self.headers.get("faxbox-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age_s:
            return False
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        try:
            key.verify(base64.b64decode(signature), timestamp.encode() + b"." + self.body)
        except (InvalidSignature, ValueError):
            return False
        return True


class _Server(uvicorn.Server):
    # The test process keeps its own signal handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class WebhookReceiver:
    port: int = field(default_factory=free_port)
    delay_s: float = 0.0
    statuses: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            path = scope["path"]
            queued = self.statuses.get(path, [])
            status = queued.pop(0) if queued else 200
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.received.append(Received(path, headers, body, time.time(), status))
        finally:
            self.open_now -= 1
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WebhookReceiver]:
        server = _Server(
            uvicorn.Config(self, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            await task
