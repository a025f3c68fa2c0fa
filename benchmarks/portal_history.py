"""Fax history through the portal's HTTP API: first page of 50, 30-day and 12-month ranges.

An account with 100,000 faxes spread evenly over the last 12 months is bulk-inserted into
a fresh database of the MongoDB-wire server (FerretDB locally). A uvicorn server with the
portal app runs in a child process (so server and client do not share one event loop);
httpx asks for the first page of the account's faxes with an API token, as a script
would. Each run times ``--requests`` requests per range after a warm-up; the median of
the runs' p95 is reported. Targets: p95 30-day <= 50 ms, 12-month <= 200 ms.
Writes benchmarks/results/portal.json.

    source var/env; uv run python benchmarks/portal_history.py [--faxes 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbox.history.writes import HistoryWrites
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Account, Faxbox, Role, Store, User
from faxbox.shared.store.monthly import month_key
from tests import children
from tests.support import free_port

RESULTS = Path(__file__).parent / "results" / "portal.json"
NOTE = (
    "FerretDB v1.24 (SQLite backend) pushes down only _id equality and a bare limit: a "
    "created_at range with a sort decodes every document of the month collection "
    "(month_scan_ms for month_scan_docs documents, the anchor). The portal lists from "
    "the history's day keys instead (per account and day, a document of creation times "
    "read by _id, then the page's fax documents by _id), which needs FerretDB built with "
    "the _id index fix of deploy/local/ferretdb.sh (unpatched v1.24.2 scans the table on "
    "every _id lookup)."
)
PAGE = 50


def history_doc(
    i: int, account_id: str, user: User, box: Faxbox, created: datetime
) -> dict[str, Any]:
    failed = i % 7 == 0
    return {
        "_id": f"fax{i:07d}{secrets.token_hex(4)}",
        "account_id": account_id,
        "month": month_key(created),
        "direction": "inbound" if i % 5 == 0 else "outbound",
        "status": "failed" if failed else "sent",
        "status_rank": 90 if failed else 91,
        "user_id": user.id,
        "faxbox_id": box.id,
        "local_number": "+12125550111",
        "remote_number": f"+1646{i % 10_000_000:07d}",
        "sender_email": user.email,
        "pages": 2,
        "pages_total": 2,
        "attempts": 1,
        "result": {"failure_class": "busy", "code": 2, "text": "The line was busy."}
        if failed
        else None,
        "statistics": {
            "bit_rate": 14400,
            "ecm": True,
            "x_resolution": 7700,
            "y_resolution": 7700,
            "remote_station_id": "REMOTE",
            "duration_s": 40.0,
        },
        "documents": {},
        "notifications": [],
        "timeline": [
            {
                "message_id": f"m{i}a",
                "type": "OutboundFaxRequested",
                "at": created,
                "summary": "requested",
            },
            {
                "message_id": f"m{i}b",
                "type": "FaxSent",
                "at": created + timedelta(minutes=1),
                "summary": "Sent 2 pages at 14400 bit/s",
            },
        ],
        "created_at": created,
        "updated_at": created + timedelta(minutes=1),
    }


async def seed(store: Store, faxes: int, now: datetime) -> tuple[str, str]:
    """Account, admin with an API token, and ``faxes`` history documents; returns
    (account id, token)."""
    writes = HistoryWrites(store.history)
    await store.ensure_indexes()
    account = await store.create_account(Account(name="Bench", realm="bench.portal.test"))
    admin = await store.create_user(
        User(account_id=account.id, email="admin@bench.portal.test", role=Role.ACCOUNT_ADMIN)
    )
    box = await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=admin.id))
    from faxbox.portal.security import TokenStore

    tokens = TokenStore(store.db)
    await tokens.ensure_indexes()
    _, secret = await tokens.create(admin, "benchmark")

    span = timedelta(days=365)
    step = span / faxes
    by_month: dict[str, list[dict[str, Any]]] = {}
    for i in range(faxes):
        created = (now - span + step * i).replace(microsecond=0)
        by_month.setdefault(month_key(created), []).append(
            history_doc(i, account.id, admin, box, created)
        )
    started = time.perf_counter()
    for _, docs in sorted(by_month.items()):
        # With their day keys, as the history-writer writes them.
        await writes.insert_many(account.id, docs)
    print(
        f"inserted {faxes} faxes in {len(by_month)} months in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return account.id, secret


async def serve(mongo_url: str, db: str, port: int) -> None:
    """Child process: the portal app (database only; no broker needed to read history)."""
    import uvicorn

    from faxbox.portal.adapters import HttpHealthProbe, RabbitManagement
    from faxbox.portal.app import create_app
    from faxbox.portal.deps import PortalDeps
    from faxbox.portal.security import SessionStore, TokenStore
    from faxbox.shared.routing import Topology

    class NoRedrive:
        async def redrive(self, service: str, limit: int | None = None) -> int:
            return 0

    store = await Store.connect(MongoSettings(mongo_url=mongo_url, mongo_db=db))
    async with httpx.AsyncClient() as http:
        deps = PortalDeps(
            store=store,
            tokens=TokenStore(store.db),
            sessions=SessionStore(store.db, 3600),
            queues=RabbitManagement(http, "http://127.0.0.1:9", "/", "guest", "guest"),
            probe=HttpHealthProbe(http),
            redriver=NoRedrive(),
            topology=Topology("faxbox"),
        )
        config = uvicorn.Config(
            create_app(deps), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        await uvicorn.Server(config).serve()
    await store.close()


async def wait_up(client: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("the portal server exited")
        try:
            if (await client.get("/openapi.json")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the portal server did not start")


async def month_scan(store: Store, account_id: str, now: datetime) -> tuple[float, int]:
    """Evidence for the figures: one full month's range query straight through PyMongo
    (no portal), median of 3. FerretDB v1's SQLite backend pushes down only ``_id``
    equality, so a range filter with a sort decodes every document of the month."""
    last_month = month_key(now.replace(day=1) - timedelta(days=1))
    coll = store.history.collection(account_id, last_month)
    docs = await coll.estimated_document_count()
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        found = coll.find({"created_at": {"$gte": now - timedelta(days=400)}})
        await found.sort([("created_at", -1), ("_id", -1)]).limit(PAGE + 1).to_list()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 1), docs


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[94]


async def time_range(
    client: httpx.AsyncClient, url: str, params: dict[str, str], requests: int
) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get(url, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        assert len(response.json()["items"]) == PAGE
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    mongo_url = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
    db = f"bench_portal_{uuid.uuid4().hex[:8]}"
    store = await Store.connect(MongoSettings(mongo_url=mongo_url, mongo_db=db))
    now = datetime.now(UTC).replace(microsecond=0)
    port = free_port()
    proc = None
    try:
        account_id, token = await seed(store, args.faxes, now)
        scan_ms, scan_docs = await month_scan(store, account_id, now)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            mongo_url,
            db,
            str(port),
            **children.popen_options(),
        )
        children.track(proc.pid)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as client:
            await wait_up(client, proc)
            url = f"/api/accounts/{account_id}/faxes"
            end = (now + timedelta(seconds=1)).isoformat()
            ranges = {
                "30d": {"start": (now - timedelta(days=30)).isoformat(), "end": end},
                "12m": {"start": (now - timedelta(days=366)).isoformat(), "end": end},
            }
            for params in ranges.values():  # warm-up: connections, caches
                for _ in range(2):
                    await client.get(url, params=params | {"limit": str(PAGE)})
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in ranges}
            for _ in range(args.runs):
                for name, params in ranges.items():
                    samples = await time_range(
                        client, url, params | {"limit": str(PAGE)}, args.requests
                    )
                    runs[name].append(
                        {
                            "p50_ms": round(statistics.median(samples), 2),
                            "p95_ms": round(p95(samples), 2),
                        }
                    )
        result = {
            "benchmark": "portal_history",
            "description": (
                f"First page ({PAGE}) of an account's faxes through the portal's HTTP API "
                f"(uvicorn child process, httpx, API token), account of {args.faxes} faxes "
                "over 12 months in FerretDB; median over runs of each run's p95 "
                f"({args.requests} requests a run)."
            ),
            "target": "p95_30d_ms <= 50, p95_12m_ms <= 200",
            "note": NOTE,
            "faxes": args.faxes,
            "runs": args.runs,
            "requests_per_run": args.requests,
            "p95_30d_ms": round(statistics.median(r["p95_ms"] for r in runs["30d"]), 2),
            "p95_12m_ms": round(statistics.median(r["p95_ms"] for r in runs["12m"]), 2),
            "month_scan_ms": scan_ms,
            "month_scan_docs": scan_docs,
            "anchor": (
                "month_scan_ms: one month's created_at range query (sort, limit 51) straight "
                "through PyMongo, the query the portal ran before the day keys"
            ),
            "ratio_p95_30d_vs_month_scan": round(
                statistics.median(r["p95_ms"] for r in runs["30d"]) / scan_ms, 4
            ),
            "p50_30d_ms": round(statistics.median(r["p50_ms"] for r in runs["30d"]), 2),
            "p50_12m_ms": round(statistics.median(r["p50_ms"] for r in runs["12m"]), 2),
            "per_run": runs,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        if not args.keep:
            await store.client.drop_database(db)
        await store.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(main())
