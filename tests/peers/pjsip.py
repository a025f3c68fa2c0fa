"""Driving the PJSIP agent (``tests.peers.pjsip_agent``) from asyncio tests.

The agent is its own process (PJSIP's threads and our event loop never share one), on
free loopback ports; its events are collected in ``events`` as they arrive and can be
waited for with ``wait``. ``pjsua2`` comes from PyPI's ``pjsua2-python`` wheel (the
workspace's dev dependencies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, servers_required

REPO = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


def _require_pjsua2() -> None:
    try:
        import pjsua2  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        message = f"pjsua2 is not installed ({exc}): uv sync installs pjsua2-python"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)


class PjsipAgent:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @property
    def uri(self) -> str:
        return f"sip:pjsip@127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").strip()
            if not text.startswith("{"):
                continue  # PJSIP's own start-up lines before its log file is set
            event = json.loads(text)
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def wait(self, match: Callable[[Event], bool], within_s: float = 10) -> Event:
        """The first event (already seen or still to come) that ``match``es."""
        async with asyncio.timeout(within_s), self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                await self._changed.wait()

    def seen(self, match: Callable[[Event], bool]) -> list[Event]:
        return [e for e in self.events if match(e)]

    async def info(self) -> Event:
        count = len(self.seen(lambda e: e["ev"] == "info"))
        await self.send(op="info")
        await self.wait(
            lambda e: e["ev"] == "info" and len(self.seen(lambda e: e["ev"] == "info")) > count
        )
        return self.seen(lambda e: e["ev"] == "info")[-1]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send(op="quit")
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


@contextlib.asynccontextmanager
async def pjsip_agent(directory: Path, **options: str | int) -> AsyncIterator[PjsipAgent]:
    """The agent on free loopback ports; ``options`` are its command-line flags
    (``prack="mandatory"``, ``timer="always"``, ``session_expires=90`` ...)."""
    _require_pjsua2()
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    log = directory / f"pjsip-{port}.log"
    args = [
        "--port",
        str(port),
        "--rtp-port",
        str(free_port(socket.SOCK_DGRAM)),
        "--log-file",
        str(log),
    ]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peers.pjsip_agent",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    agent = PjsipAgent(process, port, log)
    try:
        await agent.wait(lambda e: e["ev"] == "ready", within_s=20)
        yield agent
    finally:
        await agent.close()
