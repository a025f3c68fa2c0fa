"""Process life of a service: logging, signals, the health and metrics endpoint.

A service's ``__main__`` builds its settings and calls ``run(name, settings, service)``
where ``service`` is an async context manager factory: entering it connects and starts
consuming, leaving it stops gracefully. SIGTERM or SIGINT ends the wait in between.

The HTTP endpoint (``FAXBOX_HTTP_PORT``) answers:
- ``GET /healthz``: 200 while the process runs (liveness);
- ``GET /readyz``: 200 when every registered check passes, else 503, with a JSON body;
- ``GET /metrics``: Prometheus text format;
- whatever a service adds with ``Runtime.add_route`` (a path prefix and a handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from faxbox.shared.logs import configure_logging
from faxbox.shared.settings import RunnerSettings

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool | Awaitable[bool]]
# (method, path) -> (status line, content type, body)
RouteHandler = Callable[[str, str], Awaitable[tuple[str, str, bytes]]]
MAX_REQUEST_BODY = 64 * 1024


class Runtime:
    """What a running service shares with the runner."""

    def __init__(self, name: str) -> None:
        self.name = name
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


async def run_async(name: str, settings: RunnerSettings, service: ServiceFactory) -> None:
    runtime = Runtime(name)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.request_stop)
    server = await serve_http(runtime, settings.http_host, settings.http_port)
    log.info(
        "service starting",
        extra={"http": f"http://{settings.http_host}:{runtime.http_port}"},
    )
    try:
        async with service(runtime):
            tune_gc(settings.gc_young_threshold)
            runtime.ready = True
            log.info("service ready")
            await runtime.stopping.wait()
            runtime.ready = False
            log.info("service stopping")
    finally:
        server.close()
        await server.wait_closed()
        log.info("service stopped")


def run(name: str, settings: RunnerSettings, service: ServiceFactory) -> None:
    configure_logging(name, settings.log_level)
    asyncio.run(run_async(name, settings, service))
