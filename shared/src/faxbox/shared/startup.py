"""Start-up while the database or the broker is down: wait for it, do not exit.

A process started during an outage (a host reboot, a database restart, a deploy that
starts everything at once) used to exit with 1 after one failed connect, and its
supervisor started it again, in a loop, until the server was back. Now it waits:

- each try is logged (WARNING, with the server's address without its credentials and
  what went wrong), the gauge ``faxbox_starting_waiting_on_infrastructure{dependency}`` is 1 for
  as long as it waits (an alert can fire on it), and readiness names what is missing
  (the check of that dependency is false until it answers);
- tries come at a capped backoff (``START_BACKOFF_S``, doubling up to
  ``START_BACKOFF_CAP_S``); a database try itself waits up to ``DATABASE_TRY_S`` for the
  server to answer, so the process starts within about a second of the database's return;
- ``connect_timeout_s`` (``FAXBOX_CONNECT_TIMEOUT_S``) bounds the whole wait; 0, the
  default, waits for as long as the outage lasts, which is what an operator expects of
  a service when its database restarts. At the bound the last error is raised (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge

from faxbox.shared.failover import split_urls
from faxbox.shared.policy import is_infrastructure

log = logging.getLogger(__name__)

T = TypeVar("T")

START_BACKOFF_S = 0.5
START_BACKOFF_CAP_S = 10.0
# Also the client's server selection timeout for the life of the process (as before).
DATABASE_TRY_S = 10.0

WAITING = Gauge(
    "faxbox_starting_waiting_on_infrastructure",
    "1 while this process waits at start-up for a dependency (database, broker) to answer",
    ["dependency"],
)
START_TRIES = Counter(
    "faxbox_infrastructure_start_tries_total",
    "Failed tries to reach a dependency at start-up",
    ["dependency"],
)


def without_credentials(url: str) -> str:
    """``scheme://host:port/path`` of each URL in ``url``: what a log line may show."""
    shown = []
    for one in split_urls(url) if url.startswith("amqp") else [url]:
        parts = urllib.parse.urlsplit(one)
        host = parts.netloc.rpartition("@")[2]
        shown.append(urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")))
    return ", ".join(shown)


async def wait_for(
    dependency: str,
    where: str,
    connect: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``connect()``'s result once it succeeds; an outage is tried again at a capped
    backoff until ``timeout_s`` (0: for ever). Any other error is raised at once: a
    wrong password or database name does not heal by waiting."""
    started = clock()
    delay = START_BACKOFF_S
    tries = 0
    try:
        while True:
            try:
                result = await connect()
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                tries += 1
                START_TRIES.labels(dependency).inc()
                WAITING.labels(dependency).set(1)
                waited = clock() - started
                if timeout_s and waited + delay > timeout_s:
                    log.error(
                        "gave up waiting for the %s at %s after %.0f s (%d tries): %s",
                        dependency,
                        where,
                        waited,
                        tries,
                        _short(exc),
                    )
                    raise
                log.warning(
                    "waiting for the %s at %s (try %d, %.0f s so far, next in %.1f s): %s",
                    dependency,
                    where,
                    tries,
                    waited,
                    delay,
                    _short(exc),
                )
                await sleep(delay)
                delay = min(delay * 2, START_BACKOFF_CAP_S)
                continue
            if tries:
                log.info(
                    "the %s at %s answers after %.0f s: starting",
                    dependency,
                    where,
                    clock() - started,
                )
            return result
    finally:
        WAITING.labels(dependency).set(0)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"
