"""Process life of a service: logging, signals, the health and metrics endpoint.

A service's ``main`` calls ``main(name, Settings, service)``: the settings from the
environment, then ``run(name, settings, service)`` where ``service(runtime, settings)``
is an async context manager: entering it connects and starts consuming, leaving it
stops gracefully. SIGTERM or SIGINT ends the wait in between.

The HTTP endpoint (``FAXBOX_HTTP_PORT``) answers:
- ``GET /healthz``: 200 while the process runs (liveness);
- ``GET /readyz``: 200 when every registered check passes, else 503, with a JSON body;
- ``GET /metrics``: Prometheus text format;
- whatever a service adds with ``Runtime.add_route`` (a path prefix and a handler).

Every process measures its event loop's lag (``Runtime.loop_lag``, see ``looplag``);
the services that start fax calls consult it before each new one.

SIGTERM gives work in hand ``shutdown_grace_s``; the process then exits at the latest
``shutdown_margin_s`` later, whatever it is doing (:class:`ExitDeadline`): a process
whose loop is saturated must still stop when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from faxbox.shared import gcpause
from faxbox.shared.logs import configure_logging
from faxbox.shared.looplag import LoopLag
from faxbox.shared.settings import RunnerSettings, warn_unread_env

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool | Awaitable[bool]]
# (method, path) -> (status line, content type, body)
RouteHandler = Callable[[str, str], Awaitable[tuple[str, str, bytes]]]
MAX_REQUEST_BODY = 64 * 1024
# Exit status of a process its exit deadline ended (see ExitDeadline).
DEADLINE_EXIT_CODE = 70


class Runtime:
    """What a running service shares with the runner."""

    def __init__(self, name: str, loop_lag: LoopLag | None = None) -> None:
        self.name = name
        # Measured only while the runner runs it; otherwise it never reports overload.
        self.loop_lag = loop_lag or LoopLag(bound_ms=RunnerSettings().loop_lag_bound_ms)
        self.checks: dict[str, HealthCheck] = {}
        self.stopping = asyncio.Event()
        self.ready = False
        self.http_port: int | None = None
        self.routes: dict[str, RouteHandler] = {}

    def add_check(self, name: str, check: HealthCheck) -> None:
        self.checks[name] = check

    def add_route(self, prefix: str, handler: RouteHandler) -> None:
        """Requests whose path starts with ``prefix`` go to ``handler``."""
        self.routes[prefix] = handler

    def request_stop(self) -> None:
        self.stopping.set()

    async def health(self) -> tuple[bool, dict[str, bool]]:
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                outcome = check()
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(outcome, timeout=5)
                results[name] = bool(outcome)
            except Exception:
                log.warning("health check %s failed", name, exc_info=True)
                results[name] = False
        return self.ready and all(results.values()), results


ServiceFactory = Callable[[Runtime], AbstractAsyncContextManager[None]]
_S = TypeVar("_S", bound=RunnerSettings)


async def serve_http(runtime: Runtime, host: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            headers: dict[str, str] = {}
            while (line := await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"",
            ):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            parts = request_line.decode("latin-1").split()
            method = parts[0] if parts else "GET"
            path = parts[1] if len(parts) >= 2 else "/"
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_REQUEST_BODY:
                status, content_type, body = "413 Content Too Large", "text/plain", b""
            else:
                if length:
                    # Read (and drop) the body: closing with unread data resets the
                    # connection, and the client may lose our answer.
                    if headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await asyncio.wait_for(reader.readexactly(length), timeout=5)
                status, content_type, body = await _respond(runtime, method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    runtime.http_port = server.sockets[0].getsockname()[1]
    return server


async def _respond(runtime: Runtime, method: str, path: str) -> tuple[str, str, bytes]:
    for prefix, handler in runtime.routes.items():
        if path.startswith(prefix):
            return await handler(method, path)
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
    if path == "/healthz":
        return "200 OK", "application/json", b'{"status": "alive"}'
    if path == "/readyz":
        healthy, checks = await runtime.health()
        body = json.dumps({"service": runtime.name, "ready": healthy, "checks": checks}).encode()
        return ("200 OK" if healthy else "503 Service Unavailable"), "application/json", body
    return "404 Not Found", "text/plain", b"not found"


def tune_gc(young_threshold: int) -> None:
    """Move what start-up made out of the collector's way and collect less often.

    The collector's pauses are stalls of the event loop; with the line clock 10 times
    real time, a stall of a few hundred milliseconds is seconds of T.30 time, and calls
    fail on timers (e2e burst: 25-29 of 100 faxes redialled with Python's defaults,
    10-11 with these). ``gc.freeze`` keeps the objects that live for the whole process
    (modules, settings, connections) out of every later full collection; a young
    generation of ``young_threshold`` allocations instead of 700 makes collections
    rarer, each of them still small. 0 leaves the collector as Python set it.
    """
    if not young_threshold:
        return
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


class ExitDeadline:
    """Once armed, ends the process after ``after_s`` unless it has exited by then.

    A thread, not a task: the event loop of a saturated or wedged process may never get
    to a timer of its own. Armed from a signal handler installed with ``signal.signal``
    (which Python runs between bytecodes of the main thread, even while the loop is busy
    in Python code), not ``loop.add_signal_handler`` (which waits for the loop).
    """

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._timer: threading.Timer | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(self.after_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        log.critical("still running %.0fs after SIGTERM; exiting now", self.after_s)
        logging.shutdown()
        os._exit(DEADLINE_EXIT_CODE)


def _on_stop_signal(
    runtime: Runtime, deadline: ExitDeadline, loop: asyncio.AbstractEventLoop
) -> Callable[[int, object], None]:
    def handler(signum: int, _frame: object) -> None:
        deadline.arm()
        loop.call_soon_threadsafe(runtime.request_stop)

    return handler


async def run_async(name: str, settings: RunnerSettings, service: ServiceFactory) -> None:
    runtime = Runtime(name, LoopLag(bound_ms=settings.loop_lag_bound_ms))
    loop = asyncio.get_running_loop()
    deadline = ExitDeadline(settings.shutdown_grace_s + settings.shutdown_margin_s)
    previous = {
        signum: signal.signal(signum, _on_stop_signal(runtime, deadline, loop))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    server = await serve_http(runtime, settings.http_host, settings.http_port)
    log.info(
        "service starting",
        extra={"http": f"http://{settings.http_host}:{runtime.http_port}"},
    )
    try:
        async with runtime.loop_lag.running(), service(runtime):
            tune_gc(settings.gc_young_threshold)
            with gcpause.watching():
                runtime.ready = True
                log.info("service ready")
                await runtime.stopping.wait()
                runtime.ready = False
                log.info("service stopping")
    finally:
        server.close()
        await server.wait_closed()
        log.info("service stopped")
        # The deadline stays armed: it also covers what asyncio.run does after this.
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(name: str, settings: RunnerSettings, service: ServiceFactory) -> None:
    configure_logging(name, settings.log_level)
    warn_unread_env(type(settings), os.environ)
    asyncio.run(run_async(name, settings, service))


def main(
    name: str,
    settings_type: Callable[[], _S],
    service: Callable[[Runtime, _S], AbstractAsyncContextManager[None]],
) -> None:
    """A service's ``main``: its settings from the environment, then :func:`run`."""
    settings = settings_type()
    run(name, settings, lambda runtime: service(runtime, settings))
