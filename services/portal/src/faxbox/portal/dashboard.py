"""The queue dashboard: queue figures from the RabbitMQ management API, service health,
the SIP registrations with carriers (from the ``sip_registrations`` collection the
inbound receiver keeps), and re-driving dead letters.

The portal reads the management API over HTTP (httpx) rather than through AMQP
because only the management plugin knows consumer counts and message rates.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faxbox.portal.ports import HealthProbe, QueueSource, RegistrationSource
from faxbox.shared.failover import split_urls
from faxbox.shared.routing import SUBSCRIPTIONS, Topology
from faxbox.shared.store.registrations import SipRegistrationRecord


class ManagementApiError(Exception):
    pass


def vhost_of(amqp_url: str) -> str:
    path = urllib.parse.urlsplit(split_urls(amqp_url)[0]).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


@dataclass(frozen=True, slots=True)
class QueueRow:
    service: str
    queue: str
    declared: bool
    depth: int
    ready: int
    unacked: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    dead_letter_depth: int
    retry_depth: int


@dataclass(frozen=True, slots=True)
class HealthRow:
    service: str
    url: str
    healthy: bool
    detail: str


def _rate(stats: Any, key: str) -> float:
    if not isinstance(stats, dict):
        return 0.0
    details = stats.get(key)
    rate = details.get("rate") if isinstance(details, dict) else None
    return float(rate) if isinstance(rate, int | float) else 0.0


def _int(raw: dict[str, Any] | None, key: str) -> int:
    value = (raw or {}).get(key)
    return int(value) if isinstance(value, int) else 0


def summarize(raw: list[dict[str, Any]], topology: Topology) -> list[QueueRow]:
    """One row per consuming service (from the routing table), dead letters beside it."""
    by_name = {q.get("name"): q for q in raw if isinstance(q, dict)}
    rows = []
    for service in sorted(SUBSCRIPTIONS):
        name = topology.queue(service)
        queue = by_name.get(name)
        retry_prefix = f"{name}.retry."
        retry = sum(
            _int(q, "messages") for n, q in by_name.items() if str(n).startswith(retry_prefix)
        )
        stats = (queue or {}).get("message_stats")
        dead_letters = by_name.get(topology.dead_letter_queue(service))
        rows.append(
            QueueRow(
                service=service,
                queue=name,
                declared=queue is not None,
                depth=_int(queue, "messages"),
                ready=_int(queue, "messages_ready"),
                unacked=_int(queue, "messages_unacknowledged"),
                consumers=_int(queue, "consumers"),
                publish_rate=_rate(stats, "publish_details"),
                deliver_rate=_rate(stats, "deliver_get_details"),
                dead_letter_depth=_int(dead_letters, "messages"),
                retry_depth=retry,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class RegistrationRow:
    carrier: str
    instance: str
    aor: str
    registrar: str
    state: str  # registered | registering | failed | unregistered | expired
    expires_in_s: int | None
    last_status: int | None
    last_reason: str
    failures: int


def registration_rows(records: list[SipRegistrationRecord], now: datetime) -> list[RegistrationRow]:
    rows = []
    for r in records:
        expires_in = int((r.expires_at - now).total_seconds()) if r.expires_at else None
        rows.append(
            RegistrationRow(
                carrier=r.carrier_name,
                instance=r.instance,
                aor=r.aor,
                registrar=r.registrar,
                # A replica that stopped refreshing (it died) leaves a stale "registered".
                state="expired" if r.expired(now) else r.state,
                expires_in_s=expires_in if expires_in is None or expires_in > 0 else 0,
                last_status=r.last_status,
                last_reason=r.last_reason,
                failures=r.failures,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Dashboard:
    queues: list[QueueRow]
    queue_error: str | None
    health: list[HealthRow]
    registrations: list[RegistrationRow] = field(default_factory=list)
    registration_error: str | None = None


async def load_dashboard(
    source: QueueSource,
    probe: HealthProbe,
    topology: Topology,
    health_urls: dict[str, str],
    registrations: RegistrationSource | None = None,
) -> Dashboard:
    async def one(service: str, url: str) -> HealthRow:
        healthy, detail = await probe.check(url)
        return HealthRow(service, url, healthy, detail)

    health_task = asyncio.gather(*(one(s, u) for s, u in sorted(health_urls.items())))
    try:
        rows, error = summarize(await source.queues(), topology), None
    except ManagementApiError as exc:
        rows, error = [], str(exc)
    sip: list[RegistrationRow] = []
    sip_error = None
    if registrations is not None:
        try:
            sip = registration_rows(await registrations.all(), datetime.now(UTC))
        except Exception as exc:  # the dashboard shows what it can
            sip_error = f"SIP registrations unavailable: {exc}"
    return Dashboard(rows, error, list(await health_task), sip, sip_error)


def redrivable(service: str) -> bool:
    return service in SUBSCRIPTIONS
