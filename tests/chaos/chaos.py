"""The chaos run shared by tests/chaos/test_chaos.py (short, CI) and tests/chaos/run.py (long).

On the 3-node RabbitMQ cluster (tests/chaos/faults.py: the one FAXBOX_AMQP_URL lists, or
the local one, started for the run), the whole stack runs with two replicas of every
service that can run twice here (tests/e2e/stack.py REPLICABLE). Over a time window:

- N emails are appended to the intake mailbox (some to several fax numbers, 1 to 3
  pages; tests/chaos/plan.py), while pstn-sim places M inbound faxes to the faxboxes'
  numbers (``POST /originate``, each from a caller number of its own);
- faults at random moments (seeded RNG): SIGKILL of every service process (each
  started again after a short while), SIGKILL of a RabbitMQ node and its start, a
  FerretDB SIGKILL and start (or an outage of ``database_outage_s``), a SIGKILL and
  start of pstn-sim mid-calls (its call log is kept across it: tests/chaos/line.py),
  and optionally the whole cluster stopped for ``broker_outage_s``.

Services that die on their own (e.g. while the database is down) are restarted as a
supervisor would and counted as ``crashes``. Afterwards, once every fax has its outcome
and mail and nothing has changed for a while (or a generous bound has passed), the
outcome is counted from the evidence (tests/chaos/counting.py says what each figure
means); tests/chaos/report.py says which figures fail the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import urllib.error
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from tests.chaos.counting import count, status_of
from tests.chaos.faults import REPO, FerretDB, RabbitCluster, check_restartable, cluster_for
from tests.chaos.line import LineLog, completed
from tests.chaos.plan import (
    INTAKE_USER,
    MTA_AUTHSERV_ID,
    ChaosConfig,
    InboundCall,
    Planned,
    document,
    mid,
    plan_emails,
    plan_inbound,
)
from tests.chaos.report import commit, dead_letters
from tests.e2e.stack import REPLICABLE, SERVICES, Mailbox, SmtpCapture, Stack, service_of
from tests.support import ImapServer, RabbitServer

__all__ = ["REPO", "Chaos", "ChaosConfig", "Servers"]

CHAOS_SERVICES = tuple(name for name in SERVICES if name != "pstn_sim")
TERMINAL = {"sent", "failed", "partially_sent", "rejected"}
# A restarted service that is still alive but not ready waits on the database or broker.
STARTING_TIMEOUT_S = 1200.0


@dataclass
class Servers:
    """The shared servers the run uses (from the pytest fixtures or the environment)."""

    rabbit: RabbitServer
    mongo_url: str
    imap: ImapServer

    @classmethod
    def from_env(cls) -> Servers:
        rabbit = RabbitServer.from_env()
        imap = ImapServer(
            host=os.environ.get("FAXBOX_IMAP_HOST", "127.0.0.1"),
            port=int(os.environ.get("FAXBOX_IMAP_PORT", "1143")),
            users=(INTAKE_USER,),
            password=os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test"),
        )
        mongo_url = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
        return cls(rabbit=rabbit, mongo_url=mongo_url, imap=imap)


def _say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Chaos:
    config: ChaosConfig
    servers: Servers
    directory: Path
    seed: int = 0
    events: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    node_kills: int = 0
    database_restarts: int = 0
    pstn_restarts: int = 0
    _down: set[str] = field(default_factory=set)
    _line: LineLog | None = None
    _t0: float = 0.0

    def _event(self, text: str) -> None:
        line = f"t={time.monotonic() - self._t0:6.1f}s {text}"
        self.events.append(line)
        _say(line)

    async def run(self) -> dict[str, Any]:
        self.seed = self.config.seed if self.config.seed is not None else random.randrange(1, 10**6)
        _say(f"seed {self.seed} (rerun with the same seed to get the same plan)")
        rng = random.Random(self.seed)
        check_restartable(self.servers.mongo_url)
        _say("the 3-node RabbitMQ cluster: starting it unless it runs")
        with cluster_for(self.servers.rabbit) as (rabbit, cluster):
            return await self._run_on(rabbit, cluster, rng)

    async def _run_on(
        self, rabbit: RabbitServer, cluster: RabbitCluster, rng: random.Random
    ) -> dict[str, Any]:
        database = FerretDB()
        vhost = rabbit.add_scratch_vhost("chaos")
        settings = MongoSettings(
            mongo_url=self.servers.mongo_url, mongo_db=f"chaos_{uuid.uuid4().hex[:8]}"
        )
        store = await Store.connect(settings)
        run_id = uuid.uuid4().hex[:8]
        mailbox = Mailbox(
            self.servers.imap.host,
            self.servers.imap.port,
            INTAKE_USER,
            self.servers.imap.password,
            folder=f"chaos-{run_id}",
            processed_folder=f"chaos-{run_id}-done",
            oversize_folder=f"chaos-{run_id}-oversize",
            failed_folder=f"chaos-{run_id}-failed",
        )
        smtp = SmtpCapture()
        stack = Stack(
            pace=self.config.pace,
            amqp_url=rabbit.url_for_vhost(vhost),
            prefix=f"c{uuid.uuid4().hex[:8]}",
            mongo_url=settings.mongo_url,
            mongo_db=settings.mongo_db,
            mailbox=mailbox,
            smtp_port=smtp.port,
            directory=self.directory,
            extra_env={
                "FAXBOX_VALIDATOR_AUTHSERV_IDS": f'["{MTA_AUTHSERV_ID}"]',
                # The long run sends ~700 pages from two users in one day: past the default
                # daily caps (200 pages a user), which would reject a third of its faxes.
                "FAXBOX_VALIDATOR_DAILY_PAGES_PER_USER": "0",
                "FAXBOX_VALIDATOR_DAILY_PAGES_PER_ACCOUNT": "0",
            },
            replicas={name: self.config.replicas for name in REPLICABLE},
        )
        line = self._line = LineLog(stack)
        _say(f"stack directory (one log per service): {self.directory}")
        smtp.start()
        try:
            await store.ensure_indexes()
            await asyncio.to_thread(mailbox.create_folders)
            await stack.start_all()
            await stack.seed(store)
            planned = plan_emails(self.config, rng)
            inbound = plan_inbound(self.config, rng)
            self._t0 = time.monotonic()
            result = await self._storm(stack, line, planned, inbound, rng, cluster, rabbit, vhost)
            quiescent = await self._quiesce(stack, line, store, smtp, planned)

            async def rendered(ref: dict[str, Any]) -> bytes:
                return await store.documents.get(DocumentRef.model_validate(ref))

            line.poll()
            figures = await count(
                planned,
                inbound,
                await _records(store),
                line.calls(),
                smtp.mails,
                rendered,
                quiescent,
            )
            figures["line"] = [_brief(c) for c in line.calls()]
            figures["dead_letters"] = dead_letters(rabbit, vhost)
            figures["database_outage_s"] = self.config.database_outage_s or 0
            figures["broker_outage_s"] = self.config.broker_outage_s or 0
            figures["processes"] = list(stack.processes)
            figures["commit"] = commit()
            figures.update(result)
            figures["duration_s"] = round(time.monotonic() - self._t0, 1)
            return figures
        finally:
            # The shared servers come back whatever happened.
            await asyncio.to_thread(cluster.ensure_running)
            await asyncio.to_thread(database.ensure_running)
            stack.stop_all()
            smtp.stop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(mailbox.delete_folders)
            with contextlib.suppress(Exception):
                await store.client.drop_database(settings.mongo_db)
            await store.close()
            rabbit.delete_vhost(vhost)

    # --- the storm --------------------------------------------------------------------

    async def _storm(
        self,
        stack: Stack,
        line: LineLog,
        planned: list[Planned],
        inbound: list[InboundCall],
        rng: random.Random,
        cluster: RabbitCluster,
        rabbit: RabbitServer,
        vhost: str,
    ) -> dict[str, Any]:
        window = self.config.window_s
        # Times: sorted uniform draws over the window (bursts and gaps).
        times = sorted(rng.uniform(0, window) for _ in planned)
        call_times = sorted(rng.uniform(0, 0.9 * window) for _ in inbound)
        faults: list[tuple[float, str]] = [
            (rng.uniform(0.05, 0.95) * window, f"kill {name}")
            for name in stack.processes
            if service_of(name) in CHAOS_SERVICES
            for _ in range(self.config.kills_per_service)
        ]
        nodes = rng.sample(range(1, 4), 3)
        faults += [
            (rng.uniform(0.15, 0.85) * window, f"kill rabbitmq {nodes[n % 3]}")
            for n in range(self.config.rabbitmq_node_kills)
        ]
        if self.config.restart_database:
            faults.append((rng.uniform(0.2, 0.8) * window, "restart database"))
        if self.config.restart_pstn_sim:
            faults.append((rng.uniform(0.3, 0.7) * window, "restart pstn_sim"))
        if self.config.broker_outage_s:
            faults.append((rng.uniform(0.2, 0.8) * window, "stop rabbitmq"))
        faults.sort()
        downs = [rng.uniform(*self.config.down_s) for _ in faults]
        documents = self.directory / "inbound-documents"
        documents.mkdir(parents=True, exist_ok=True)
        for pages in {c.pages for c in inbound}:
            (documents / f"{pages}.pdf").write_bytes(document(pages))
        # One fault of a kind at a time: two RabbitMQ nodes down at once is a cluster
        # without a quorum, two database restarts overlapping are one.
        locks: dict[str, asyncio.Lock] = {}

        async def append_all() -> None:
            for at, email in zip(times, planned, strict=True):
                await self._until(at)
                await asyncio.to_thread(stack.mailbox.append, email.message)
            self._event(f"all {len(planned)} emails appended")

        async def originate_all() -> None:
            for at, call in zip(call_times, inbound, strict=True):
                await self._until(at)
                await self._originate(stack, call, documents / f"{call.pages}.pdf")
            self._event(f"all {len(inbound)} inbound faxes placed")

        async def fault(at: float, what: str, down: float) -> None:
            await self._until(at)
            kind = what.rsplit(" ", 1)[0] if what.startswith("kill rabbitmq") else what
            lock = locks.setdefault("rabbitmq" if "rabbitmq" in kind else kind, asyncio.Lock())
            async with lock:
                await self._fault(what, down, stack, line, cluster, rabbit, vhost)

        async def keep_the_log() -> None:
            while True:
                await asyncio.to_thread(line.poll)
                await asyncio.sleep(1)

        background = [
            asyncio.create_task(self._supervise(stack)),
            asyncio.create_task(keep_the_log()),
        ]
        try:
            await asyncio.gather(
                append_all(),
                originate_all(),
                *(fault(at, what, down) for (at, what), down in zip(faults, downs, strict=True)),
            )
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._revive(stack)
        return {
            "seed": self.seed,
            "kills": dict(self.kills),
            "crashes": dict(self.crashes),
            "rabbitmq_node_kills": self.node_kills,
            "database_restarts": self.database_restarts,
            "pstn_sim_restarts": self.pstn_restarts,
            "events": self.events,
        }

    async def _fault(
        self,
        what: str,
        down: float,
        stack: Stack,
        line: LineLog,
        cluster: RabbitCluster,
        rabbit: RabbitServer,
        vhost: str,
    ) -> None:
        if what.startswith("kill rabbitmq"):
            node = int(what.rsplit(" ", 1)[1])
            self._event(f"rabbitmq node {node}: SIGKILL, down {down:.1f} s")
            await asyncio.to_thread(cluster.kill, node)
            self.node_kills += 1
            await asyncio.sleep(down)
            await asyncio.to_thread(cluster.start, node, rabbit, vhost)
            self._event(f"rabbitmq node {node}: running again")
        elif what == "stop rabbitmq":
            outage = self.config.broker_outage_s or down
            self._event(f"rabbitmq: every node stopped, down {outage:.0f} s")
            await asyncio.to_thread(cluster.stop_all)
            await asyncio.sleep(outage)
            await asyncio.to_thread(cluster.start_all)
            await asyncio.to_thread(rabbit.await_vhost_running, vhost, 120)
            self._event("rabbitmq: every node running again")
        elif what == "restart database":
            database = FerretDB()
            outage = self.config.database_outage_s or down
            self._event(f"ferretdb: SIGKILL, down {outage:.0f} s")
            await asyncio.to_thread(database.kill)
            await asyncio.sleep(outage)
            await asyncio.to_thread(database.start)
            self.database_restarts += 1
            self._event("ferretdb: started again")
        else:
            name = what.split()[1]
            self._down.add(name)
            if name == "pstn_sim":
                # Mid-calls: wait (a while) for one to be on the line; then the last look
                # at its log, and the kill: what was open is cut by it.
                for _ in range(60):
                    await asyncio.to_thread(line.poll)
                    if line.open_calls():
                        break
                    await asyncio.sleep(0.5)
            stack.kill(name)
            if name == "pstn_sim":
                self.pstn_restarts += 1
                cut = line.process_killed()
                self._event(f"pstn_sim: SIGKILL with {cut} call(s) open, down {down:.1f} s")
            else:
                self.kills[name] += 1
                self._event(f"{name}: SIGKILL, down {down:.1f} s")
            await asyncio.sleep(down)
            await self._start(stack, name)
            self._down.discard(name)
            self._event(f"{name}: ready again")

    async def _originate(self, stack: Stack, call: InboundCall, path: Path) -> None:
        """Ask pstn-sim to place the call; while it is away (its restart), ask again."""
        request = {
            "from": call.caller,
            "to": call.to,
            "document": str(path),
            "media": call.media,
        }
        for _ in range(120):
            try:
                await asyncio.to_thread(stack.pstn, "/originate", request)
                return
            except (urllib.error.URLError, OSError, TimeoutError):
                await asyncio.sleep(0.5)
        raise RuntimeError(f"pstn-sim did not take inbound call {call.index} for a minute")

    async def _until(self, at: float) -> None:
        delay = self._t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _start(self, stack: Stack, name: str) -> None:
        """Start a service again; one that dies while starting is started again. One
        started while the database or broker is down waits for it (faxbox.shared.startup):
        so long as it lives, it is given the longest outage of the run and then some."""
        for _ in range(400):
            try:
                await stack.restart(name, timeout_s=STARTING_TIMEOUT_S)
                return
            except AssertionError as exc:
                self._event(f"{name}: did not come up ({str(exc).splitlines()[0]}); again")
                await asyncio.sleep(2)
        raise RuntimeError(f"faxbox.{name} does not start any more; see {stack.log_path(name)}")

    async def _supervise(self, stack: Stack) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._revive(stack)

    async def _revive(self, stack: Stack) -> None:
        for name in stack.dead():
            if name in self._down:
                continue
            code = stack.procs[name].returncode
            self.crashes[name] += 1
            if name == "pstn_sim" and self._line is not None:
                self._line.process_killed()
            self._event(f"{name}: exited by itself ({code}); restarting it")
            self._down.add(name)
            try:
                await self._start(stack, name)
            finally:
                self._down.discard(name)

    # --- the end ----------------------------------------------------------------------

    async def _quiesce(
        self, stack: Stack, line: LineLog, store: Store, smtp: SmtpCapture, planned: list[Planned]
    ) -> bool:
        wanted = {p.message_id for p in planned}
        faxes = sum(len(p.recipients) for p in planned)
        supervisor = asyncio.create_task(self._supervise(stack))
        last: tuple[int, int, int] | None = None
        stable_since = time.monotonic()
        deadline = time.monotonic() + self.config.quiesce_timeout_s
        try:
            while time.monotonic() < deadline:
                records = await _records(store)
                done = sum(
                    1
                    for r in records
                    if status_of(r) in TERMINAL
                    and mid(str(r.get("source_message_id") or "")) in wanted
                )
                await asyncio.to_thread(line.poll)
                now = (len(records), len(smtp.mails), len(line.records))
                if now != last:
                    last, stable_since = now, time.monotonic()
                received = sum(
                    1 for c in line.calls() if c["direction"] == "from_sim" and completed(c)
                )
                if (
                    done >= faxes
                    and len(smtp.mails) >= faxes + received
                    and not line.open_calls()
                    and time.monotonic() - stable_since >= self.config.settle_s
                ):
                    self._event("quiescent")
                    return True
                await asyncio.sleep(1)
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self._event("not quiescent at the bound; counting anyway")
        return False


async def _records(store: Store) -> list[dict[str, Any]]:
    db = store.db
    docs: list[dict[str, Any]] = []
    for name in sorted(await db.list_collection_names()):
        if name.startswith("fax_history_"):
            docs.extend([doc async for doc in db[name].find({})])
    return docs


def _brief(call: dict[str, Any]) -> dict[str, Any]:
    """A call as the results file keeps it (the evidence behind the line's figures)."""
    outcome = call.get("outcome") or {}
    return {
        "id": call["id"],
        "direction": call["direction"],
        "from": call["from"],
        "to": call["to"],
        "started_at": call["started_at"],
        "ended_at": call["ended_at"],
        "sip_status": call.get("sip_status"),
        "tries": [t.get("sip_status") for t in call.get("tries") or []],
        "pages_received": call.get("pages_received"),
        "success": outcome.get("success"),
        "result": outcome.get("completion_name") or call.get("error"),
        "cut_by_restart": bool(call.get("cut_by_restart")),
    }
