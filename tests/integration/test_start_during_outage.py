"""A service started while its database or broker is down waits for it (faxbox.shared.startup).

Real processes (``python -m faxbox.history``) against a FerretDB of the test's own that
is not up yet, then started; or against the shared RabbitMQ (a fresh vhost) behind a
link the test opens only later (tests/cuttable.py). No fakes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from faxbox.shared.bus import Bus
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from tests import children
from tests.cuttable import CuttableLink
from tests.ferretdb import PrivateFerretDB
from tests.integration.history._events import outbound_sent
from tests.integration.history.test_history_writer import T0, fetch
from tests.support import free_port

pytestmark = pytest.mark.integration

TIMEOUT = "FAXBOX_CONNECT_TIMEOUT_S"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_history(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return children.spawn(
            [sys.executable, "-m", "faxbox.history"],
            # The production default of FAXBOX_CONNECT_TIMEOUT_S (0: wait for ever) is
            # what is tested, unless the test sets one.
            env={**{k: v for k, v in os.environ.items() if k != TIMEOUT}, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _env(broker: BrokerSettings, mongo_url: str, db: str, http_port: int) -> dict[str, str]:
    env = {
        "FAXBOX_AMQP_URL": broker.amqp_url,
        "FAXBOX_EXCHANGE_PREFIX": broker.exchange_prefix,
        "FAXBOX_MONGO_URL": mongo_url,
        "FAXBOX_MONGO_DB": db,
        "FAXBOX_HTTP_PORT": str(http_port),
        "FAXBOX_HISTORY_RETENTION_INTERVAL_S": "0",
        "FAXBOX_SHUTDOWN_GRACE_S": "5",
    }
    return env


async def test_a_service_started_before_its_database_waits_then_works(
    broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    ferret = PrivateFerretDB(tmp_path / "ferretdb")
    db = f"test_{uuid.uuid4().hex[:8]}"
    http_port = free_port()
    log = tmp_path / "history.log"
    proc = _start_history(_env(broker_settings, ferret.url, db, http_port), log)
    try:
        await _until("the health endpoint", lambda: _try_get(http_port, "/healthz") == 200, 30)
        # Down: alive, not ready, saying what it waits for; it does not exit.
        waiting = "waiting for the database at mongodb://127.0.0.1:"
        await _until("the wait to be logged", lambda: log.read_text().count(waiting) >= 2, 30)
        assert proc.poll() is None, log.read_text()
        status, body = _get(http_port, "/readyz")
        assert status == 503
        assert '"database": false' in body
        _, metrics = _get(http_port, "/metrics")
        assert 'faxbox_starting_waiting_on_infrastructure{dependency="database"} 1.0' in metrics

        ferret.start()
        started = time.monotonic()
        await _until("readiness", lambda: _try_get(http_port, "/readyz") == 200, 30)
        ready_after_s = time.monotonic() - started
        _, metrics = _get(http_port, "/metrics")
        assert 'faxbox_starting_waiting_on_infrastructure{dependency="database"} 0.0' in metrics
        assert ready_after_s < 15, ready_after_s

        # It works: an event published now is written to the database it waited for.
        account = f"acc{uuid.uuid4().hex[:6]}"
        requested = outbound_sent("fax_outage", account, T0)[0]
        bus = Bus(broker_settings)
        await bus.connect()
        store = await Store.connect(MongoSettings(mongo_url=ferret.url, mongo_db=db))
        try:
            await bus.publish(requested)
            deadline = time.monotonic() + 30
            while await fetch(store, account, "202611", "fax_outage") is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.3)
        finally:
            await bus.close()
            await store.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        children.end(proc.pid, grace_s=5)
        ferret.stop()


async def test_a_service_started_before_its_broker_waits_then_works(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, tmp_path: Path
) -> None:
    real = urllib.parse.urlsplit(broker_settings.amqp_url)
    link = CuttableLink(real.hostname or "127.0.0.1", real.port or 5672)  # not open yet
    behind = real._replace(netloc=f"guest:guest@127.0.0.1:{link.port}").geturl()
    http_port = free_port()
    env = _env(broker_settings, mongo_settings.mongo_url, mongo_settings.mongo_db, http_port)
    env["FAXBOX_AMQP_URL"] = behind
    log = tmp_path / "history.log"
    proc = _start_history(env, log)
    try:
        waiting = "waiting for the broker at amqp://127.0.0.1:"
        await _until("the wait to be logged", lambda: log.read_text().count(waiting) >= 3, 30)
        assert proc.poll() is None, log.read_text()
        status, body = _get(http_port, "/readyz")
        assert status == 503
        assert '"broker": false' in body
        assert '"database": true' in body
        _, metrics = _get(http_port, "/metrics")
        assert 'faxbox_starting_waiting_on_infrastructure{dependency="broker"} 1.0' in metrics

        await link.open()
        await _until("readiness", lambda: _try_get(http_port, "/readyz") == 200, 30)
        account = f"acc{uuid.uuid4().hex[:6]}"
        bus = Bus(broker_settings)
        await bus.connect()
        store = await Store.connect(mongo_settings)
        try:
            await bus.publish(outbound_sent("fax_late_broker", account, T0)[0])
            deadline = time.monotonic() + 30
            while await fetch(store, account, "202611", "fax_late_broker") is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.3)
        finally:
            await bus.close()
            await store.close()
    finally:
        children.end(proc.pid, grace_s=5)
        await link.cut()


async def test_the_wait_has_a_bound_when_one_is_set(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, tmp_path: Path
) -> None:
    """The broker down (a port nothing listens on) with FAXBOX_CONNECT_TIMEOUT_S=3."""
    http_port = free_port()
    env = _env(broker_settings, mongo_settings.mongo_url, mongo_settings.mongo_db, http_port)
    env["FAXBOX_AMQP_URL"] = f"amqp://guest:secret@127.0.0.1:{free_port()}/"
    env[TIMEOUT] = "3"
    log = tmp_path / "history.log"
    started = time.monotonic()
    proc = _start_history(env, log)
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        children.end(proc.pid, grace_s=5)
    text = log.read_text()
    assert code == 1, text
    assert time.monotonic() - started < 30
    assert "waiting for the broker at amqp://127.0.0.1:" in text
    assert "gave up waiting for the broker" in text
    assert "secret" not in text


def _try_get(port: int, path: str) -> int | None:
    try:
        return _get(port, path)[0]
    except OSError:
        return None
