from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
from collections.abc import AsyncIterator

from faxbox.shared.logs import JsonFormatter, fax_context
from faxbox.shared.runner import Runtime, run_async, serve_http, tune_gc
from faxbox.shared.settings import RunnerSettings


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_service_lifecycle_health_metrics_and_graceful_stop() -> None:
    events: list[str] = []
    runtimes: list[Runtime] = []
    database_up = True

    @contextlib.asynccontextmanager
    async def service(runtime: Runtime) -> AsyncIterator[None]:
        runtimes.append(runtime)
        runtime.add_check("database", lambda: database_up)
        events.append("started")
        yield
        events.append("stopped")

    settings = RunnerSettings(http_port=0, gc_young_threshold=0)  # this process's gc stays
    task = asyncio.create_task(run_async("demo", settings, service))
    while not runtimes or not runtimes[0].ready:
        await asyncio.sleep(0.01)
    runtime = runtimes[0]
    assert runtime.http_port

    status, body = await http_get(runtime.http_port, "/readyz")
    assert status == 200
    assert json.loads(body) == {"service": "demo", "ready": True, "checks": {"database": True}}

    database_up = False
    status, body = await http_get(runtime.http_port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"] == {"database": False}

    status, body = await http_get(runtime.http_port, "/healthz")
    assert status == 200

    status, body = await http_get(runtime.http_port, "/metrics")
    assert status == 200
    assert "python_info" in body or "process_" in body or "# HELP" in body

    status, _ = await http_get(runtime.http_port, "/nope")
    assert status == 404

    runtime.request_stop()
    await asyncio.wait_for(task, 5)
    assert events == ["started", "stopped"]


def test_json_logs_carry_the_fax_id_of_the_work_in_hand() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("validator"))
    logger = logging.getLogger("test.jsonlogs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    with fax_context("fax42"):
        logger.info("rendered %d pages", 3, extra={"pages": 3})
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["fax_id"] == "fax42"
    assert first["msg"] == "rendered 3 pages"
    assert first["pages"] == 3
    assert first["service"] == "validator"
    assert "fax_id" not in second


async def test_added_routes_get_the_method_and_path_and_bodies_are_read() -> None:
    seen: list[tuple[str, str]] = []

    async def hook(method: str, path: str) -> tuple[str, str, bytes]:
        seen.append((method, path))
        return "200 OK", "text/plain", b"ok\n"

    runtime = Runtime("demo")
    runtime.add_route("/hook/", hook)
    server = await serve_http(runtime, "127.0.0.1", 0)
    try:
        assert runtime.http_port
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        # As Dovecot's HTTP client sends a POST with a body: it waits for 100 Continue.
        writer.write(
            b"POST /hook/abc HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        await reader.readline()
        writer.write(b"hello")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert raw.endswith(b"\r\n\r\nok\n")
        assert seen == [("POST", "/hook/abc")]

        status, _ = await http_get(runtime.http_port, "/hooks")
        assert status == 404
        status, _ = await http_get(runtime.http_port, "/hook/x")
        assert (status, seen[-1]) == (200, ("GET", "/hook/x"))
    finally:
        server.close()
        await server.wait_closed()


def test_tune_gc_freezes_start_up_and_collects_the_young_less_often() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
