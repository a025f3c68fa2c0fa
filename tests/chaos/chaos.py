"""The chaos run shared by tests/chaos/test_chaos.py (short, CI) and tests/chaos/run.py (long).

N emails are appended to the intake mailbox over a time window while every service but
pstn-sim is killed with SIGKILL and restarted at random moments (seeded RNG), the
RabbitMQ node is restarted once (``rabbitmqctl stop_app`` / ``start_app``: the machine's
node, managed by deploy/local/rabbitmq.sh) and the FerretDB process of this clone once
(SIGKILL of the pid in var/run/ferretdb.pid, then ``bash deploy/local/ferretdb.sh``).
pstn-sim is the carrier and the remote fax machines: it stays up, because its call log
is the evidence of what reached the line.

Services that die on their own (e.g. while the database is down) are restarted as a
supervisor would and counted as ``crashes``.

Afterwards, once nothing has changed for a while (or a generous bound has passed), the
outcome is read from the history collections, pstn-sim's call log and the SMTP capture:

- ``terminal``: emails whose fax has exactly one history record, in the expected terminal
  status (receive numbers: sent; always-busy numbers: failed after 3 attempts; bad mails:
  rejected); ``lost``: emails with no terminal record; ``duplicate_records``: emails with
  more than one fax record; ``wrong_outcome``: one record, in another status;
- ``duplicates_on_line``: completed calls (pstn-sim outcome success) beyond one per
  destination number (every receive email has a number of its own); a call cut by a kill
  does not count;
- ``missing_mails`` / ``extra_mails``: each email must get exactly one mail, to its
  sender, In-Reply-To its Message-ID, of its outcome's kind; any other mail is extra;
- ``history_incomplete``: terminal records without their notification, pages or reasons;
- for information: ``calls``, ``calls_completed``, ``calls_cut`` (pages received but not
  completed), ``busy_calls_over_policy`` (dials to always-busy numbers beyond 3 per email).

A failing figure is any of lost, duplicate_records, wrong_outcome, duplicates_on_line,
calls_for_rejected, missing_mails, extra_mails, history_incomplete not being 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Literal

from faxbox.demo.document import demo_pdf
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from tests.e2e.stack import (
    ALICE,
    BOB,
    REALM,
    REPLICABLE,
    SERVICES,
    Mailbox,
    SmtpCapture,
    Stack,
    service_of,
)
from tests.support import ImapServer, RabbitServer

REPO = Path(__file__).resolve().parents[2]
MTA_AUTHSERV_ID = "mx.chaos.test"
INTAKE_USER = "chaos@faxbox.test"
# pstn-sim's default table: every number listed below but 011x is answered by a fax
# machine that receives (no scenario row matches it); 011x is always busy.
RECEIVE_NUMBERS = [f"+1212555{n:04d}" for n in range(200, 400)]
BUSY_NUMBERS = [f"+1212555{n:04d}" for n in range(110, 120)]
# Numbers of mails that are rejected before dialing: nothing may ever call them.
REJECT_NUMBERS = [f"+1212555{n:04d}" for n in range(400, 600)]
CHAOS_SERVICES = tuple(name for name in SERVICES if name != "pstn_sim")
TERMINAL = {"sent", "failed", "rejected"}

Kind = Literal["receive", "busy", "reject"]


@dataclass(frozen=True)
class ChaosConfig:
    emails: int = 30
    seed: int | None = None
    # Emails are appended over this window; the chaos events fall inside it.
    window_s: float = 45.0
    kills_per_service: int = 1
    restart_rabbitmq: bool = True
    restart_database: bool = True
    # Replicas of every service that can run twice here (tests/e2e/stack.py REPLICABLE):
    # claims, leases and the outbox race for real.
    replicas: int = 2
    # The database restart keeps FerretDB down this long instead of down_s: an outage
    # past every retry budget (the long run's 10 minutes), which must be waited out.
    database_outage_s: float | None = None
    # The same for the RabbitMQ restart (the broker away as a whole).
    broker_outage_s: float | None = None
    # How long a killed service (or a server) stays down before it is started again.
    down_s: tuple[float, float] = (0.5, 3.0)
    # Quiescent: every email has its outcome and mail, and nothing changed for settle_s.
    settle_s: float = 10.0
    quiesce_timeout_s: float = 180.0
    reject_share: float = 0.15
    busy_share: float = 0.1
    bob_share: float = 0.2


@dataclass(frozen=True)
class Planned:
    index: int
    kind: Kind
    sender: str
    number: str
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return _mid(str(self.message["Message-ID"]))

    @property
    def expected_status(self) -> str:
        return {"receive": "sent", "busy": "failed", "reject": "rejected"}[self.kind]


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


def _mid(value: str) -> str:
    return value.strip().strip("<>")


def _say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- the emails -------------------------------------------------------------------------


def plan_emails(config: ChaosConfig, rng: random.Random) -> list[Planned]:
    n = config.emails
    rejects = max(1, round(n * config.reject_share))
    busies = max(1, round(n * config.busy_share))
    counts: list[tuple[Kind, int]] = [
        ("reject", rejects),
        ("busy", busies),
        ("receive", n - rejects - busies),
    ]
    kinds: list[Kind] = [kind for kind, k in counts for _ in range(k)]
    if kinds.count("receive") > len(RECEIVE_NUMBERS):
        raise ValueError(f"at most {len(RECEIVE_NUMBERS)} receive emails (distinct numbers)")
    rng.shuffle(kinds)
    receive = rng.sample(RECEIVE_NUMBERS, kinds.count("receive"))
    rejected = rng.sample(REJECT_NUMBERS, kinds.count("reject"))
    pdf = demo_pdf(1)
    planned: list[Planned] = []
    for index, kind in enumerate(kinds):
        sender = BOB.email if rng.random() < config.bob_share else ALICE.email
        attachments: list[tuple[str, bytes]] = [("page.pdf", pdf)]
        if kind == "receive":
            number, to = receive.pop(), ""
        elif kind == "busy":
            number, to = rng.choice(BUSY_NUMBERS), ""
        else:
            number = rejected.pop()
            to = ""
            fault = rng.choice(("no attachment", "two attachments", "bad number"))
            if fault == "no attachment":
                attachments = []
            elif fault == "two attachments":
                attachments = [("a.pdf", pdf), ("b.pdf", pdf)]
            else:
                to = f"12345@{REALM}"
        message = EmailMessage()
        # Put straight into the intake folder: the proof is what the MTA in front of it
        # writes for a sender who logged in (the run trusts that MTA's id, no other).
        message["Authentication-Results"] = f"{MTA_AUTHSERV_ID}; auth=pass smtp.auth={sender}"
        message["From"] = sender
        message["To"] = to or f"{number}@{REALM}"
        message["Subject"] = f"chaos {index}"
        message["Message-ID"] = make_msgid(idstring=f"chaos{index}", domain="client.test")
        message.set_content(f"Chaos email {index} ({kind}).\n")
        for filename, data in attachments:
            message.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
        planned.append(Planned(index, kind, sender, number, message))
    return planned


# --- the shared servers ---------------------------------------------------------------


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")


class RabbitNode:
    """The RabbitMQ broker the run uses, its app stopped and started: the machine's node
    (deploy/local/rabbitmq.sh), or every node named in FAXBOX_CHAOS_RABBITMQ_NODES
    (comma-separated, e.g. a local cluster's ``faxbox-1@host,...``: all of them, so the
    broker is away as a whole)."""

    def __init__(self) -> None:
        self.stopped = False
        names = os.environ.get("FAXBOX_CHAOS_RABBITMQ_NODES", "")
        self.nodes = tuple(n.strip() for n in names.split(",") if n.strip())

    def _each(self, *args: str, timeout_s: float) -> None:
        commands = [
            ["rabbitmqctl", "-q", *(["-n", node] if node else []), *args]
            for node in (self.nodes or ("",))
        ]
        # At once: a cluster's nodes wait for each other's tables while starting.
        with ThreadPoolExecutor(len(commands)) as pool:
            for done in [pool.submit(_run, command, timeout_s) for command in commands]:
                done.result()

    def stop(self) -> None:
        self.stopped = True
        self._each("stop_app", timeout_s=120)

    def start(self) -> None:
        self._each("start_app", timeout_s=300)
        self._each("await_startup", "--timeout", "120", timeout_s=150)
        # start_app returns before every vhost runs again, and a vhost that failed to
        # recover stays down (541 on every connection to it, the chaos run's and any
        # later test's): the node is back only once every vhost runs and a new one can.
        rabbit = RabbitServer.from_env()
        vhosts = rabbit.api("GET", "/api/vhosts")
        assert isinstance(vhosts, list)
        for vhost in vhosts:
            rabbit.await_vhost_running(str(vhost["name"]), timeout_s=60)
        with rabbit.scratch_vhost("probe"):
            pass
        self.stopped = False

    def ensure_running(self) -> None:
        if self.stopped:
            self.start()


class FerretDB:
    """This clone's FerretDB (deploy/local/ferretdb.sh, pid in var/run/ferretdb.pid)."""

    def __init__(self, repo: Path = REPO) -> None:
        self.repo = repo
        self.pid_file = repo / "var" / "run" / "ferretdb.pid"
        self.stopped = False

    def pid(self) -> int:
        pid = int(self.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"ferretdb" not in cmdline:
            raise RuntimeError(f"pid {pid} in {self.pid_file} is not FerretDB")
        return pid

    def kill(self) -> None:
        pid = self.pid()
        self.stopped = True
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            status = Path(f"/proc/{pid}/status")
            with contextlib.suppress(OSError):
                if "\nState:\tZ" in status.read_text():
                    break
            time.sleep(0.05)

    def start(self) -> None:
        # Without FAXBOX_MONGO_URL: ferretdb.sh starts nothing when that URL answers, and
        # it must start this clone's own server (on FAXBOX_LOCAL_MONGO_PORT) again.
        env = {k: v for k, v in os.environ.items() if k != "FAXBOX_MONGO_URL"}
        _run(["bash", str(self.repo / "deploy" / "local" / "ferretdb.sh")], 120, env)
        self.stopped = False

    def ensure_running(self) -> None:
        if self.stopped:
            self.start()


def check_restartable(servers: Servers) -> None:
    """Fail early (not skip) when the shared servers cannot be restarted from here."""
    url = urllib.parse.urlsplit(servers.rabbit.amqp_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"RabbitMQ at {url.hostname} is not the local node")
    _run(["rabbitmq-diagnostics", "-q", "ping"], 60)
    mongo = urllib.parse.urlsplit(servers.mongo_url)
    # deploy/local/ferretdb.sh listens on FAXBOX_LOCAL_MONGO_PORT (default 27017).
    ours = int(os.environ.get("FAXBOX_LOCAL_MONGO_PORT", "27017"))
    if mongo.hostname not in ("127.0.0.1", "localhost") or (mongo.port or 27017) != ours:
        raise RuntimeError(f"{servers.mongo_url} is not this clone's FerretDB")
    FerretDB().pid()


# --- the run ----------------------------------------------------------------------------


@dataclass
class Chaos:
    config: ChaosConfig
    servers: Servers
    directory: Path
    seed: int = 0
    events: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    rabbit_restarts: int = 0
    database_restarts: int = 0
    _down: set[str] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _t0: float = 0.0

    def _event(self, text: str) -> None:
        line = f"t={time.monotonic() - self._t0:6.1f}s {text}"
        self.events.append(line)
        _say(line)

    async def run(self) -> dict[str, Any]:
        self.seed = self.config.seed if self.config.seed is not None else random.randrange(1, 10**6)
        _say(f"seed {self.seed} (rerun with the same seed to get the same plan)")
        rng = random.Random(self.seed)
        check_restartable(self.servers)
        rabbit_node, database = RabbitNode(), FerretDB()
        rabbit = self.servers.rabbit
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
            amqp_url=rabbit.url_for_vhost(vhost),
            prefix=f"c{uuid.uuid4().hex[:8]}",
            mongo_url=settings.mongo_url,
            mongo_db=settings.mongo_db,
            mailbox=mailbox,
            smtp_port=smtp.port,
            directory=self.directory,
            extra_env={"FAXBOX_VALIDATOR_AUTHSERV_IDS": f'["{MTA_AUTHSERV_ID}"]'},
            replicas={name: self.config.replicas for name in REPLICABLE},
        )
        _say(f"stack directory (one log per service): {self.directory}")
        smtp.start()
        try:
            await store.ensure_indexes()
            await asyncio.to_thread(mailbox.create_folders)
            await stack.start_all()
            await stack.seed(store)
            planned = plan_emails(self.config, rng)
            self._t0 = time.monotonic()
            result = await self._storm(stack, planned, rng, rabbit_node, database)
            figures = await self._quiesce_and_count(stack, store, smtp, planned)
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
            await asyncio.to_thread(rabbit_node.ensure_running)
            await asyncio.to_thread(database.ensure_running)
            stack.stop_all()
            smtp.stop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(mailbox.delete_folders)
            with contextlib.suppress(Exception):
                await store.client.drop_database(settings.mongo_db)
            await store.close()
            rabbit.delete_vhost(vhost)

    async def _storm(
        self,
        stack: Stack,
        planned: list[Planned],
        rng: random.Random,
        rabbit_node: RabbitNode,
        database: FerretDB,
    ) -> dict[str, Any]:
        window = self.config.window_s
        # Append times: sorted uniform draws over the window (bursts and gaps).
        times = sorted(rng.uniform(0, window) for _ in planned)
        chaos: list[tuple[float, str]] = [
            (rng.uniform(0.05, 0.95) * window, f"kill {name}")
            for name in stack.processes
            if service_of(name) in CHAOS_SERVICES
            for _ in range(self.config.kills_per_service)
        ]
        if self.config.restart_rabbitmq:
            chaos.append((rng.uniform(0.2, 0.8) * window, "restart rabbitmq"))
        if self.config.restart_database:
            chaos.append((rng.uniform(0.2, 0.8) * window, "restart database"))
        chaos.sort()
        downs = [rng.uniform(*self.config.down_s) for _ in chaos]

        async def append_all() -> None:
            for at, email in zip(times, planned, strict=True):
                await self._until(at)
                await asyncio.to_thread(stack.mailbox.append, email.message)
            self._event(f"all {len(planned)} emails appended")

        async def wreak() -> None:
            for (at, what), down in zip(chaos, downs, strict=True):
                await self._until(at)
                if what == "restart rabbitmq":
                    outage = self.config.broker_outage_s or down
                    self._event(f"rabbitmq: stop_app, down {outage:.0f} s")
                    await asyncio.to_thread(rabbit_node.stop)
                    await asyncio.sleep(outage)
                    await asyncio.to_thread(rabbit_node.start)
                    self.rabbit_restarts += 1
                    self._event("rabbitmq: started again")
                elif what == "restart database":
                    outage = self.config.database_outage_s or down
                    self._event(f"ferretdb: SIGKILL, down {outage:.0f} s")
                    await asyncio.to_thread(database.kill)
                    await asyncio.sleep(outage)
                    await asyncio.to_thread(database.start)
                    self.database_restarts += 1
                    self._event("ferretdb: started again")
                else:
                    name = what.split()[1]
                    async with self._lock:
                        self._down.add(name)
                        stack.kill(name)
                    self.kills[name] += 1
                    self._event(f"{name}: SIGKILL, down {down:.1f} s")
                    await asyncio.sleep(down)
                    async with self._lock:
                        await self._start(stack, name)
                        self._down.discard(name)
                    self._event(f"{name}: ready again")

        supervisor = asyncio.create_task(self._supervise(stack))
        try:
            await asyncio.gather(append_all(), wreak())
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._revive(stack)
        return {
            "seed": self.seed,
            "kills": dict(self.kills),
            "crashes": dict(self.crashes),
            "rabbitmq_restarts": self.rabbit_restarts,
            "database_restarts": self.database_restarts,
            "events": self.events,
        }

    async def _until(self, at: float) -> None:
        delay = self._t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _start(self, stack: Stack, name: str) -> None:
        """Start a service again; one that dies while starting (database down) is retried."""
        for _ in range(20):
            try:
                await stack.restart(name)
                return
            except AssertionError as exc:
                self._event(f"{name}: did not come up ({str(exc).splitlines()[0]}); again")
                await asyncio.sleep(1)
        raise RuntimeError(f"faxbox.{name} does not start any more; see {stack.log_path(name)}")

    async def _supervise(self, stack: Stack) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._revive(stack)

    async def _revive(self, stack: Stack) -> None:
        async with self._lock:
            for name in stack.dead():
                if name in self._down:
                    continue
                code = stack.procs[name].returncode
                self.crashes[name] += 1
                self._event(f"{name}: exited by itself ({code}); restarting it")
                await self._start(stack, name)

    # --- the outcome ------------------------------------------------------------------

    async def _records(self, store: Store) -> list[dict[str, Any]]:
        db = store.db
        names = await db.list_collection_names()
        docs: list[dict[str, Any]] = []
        for name in sorted(names):
            if name.startswith("fax_history_"):
                docs.extend([doc async for doc in db[name].find({})])
        return docs

    async def _quiesce_and_count(
        self, stack: Stack, store: Store, smtp: SmtpCapture, planned: list[Planned]
    ) -> dict[str, Any]:
        wanted = {p.message_id for p in planned}
        supervisor = asyncio.create_task(self._supervise(stack))
        last: tuple[int, int, int] | None = None
        stable_since = time.monotonic()
        deadline = time.monotonic() + self.config.quiesce_timeout_s
        quiescent = False
        try:
            while time.monotonic() < deadline:
                records = await self._records(store)
                done = {
                    _mid(str(r.get("source_message_id") or ""))
                    for r in records
                    if _status(r) in TERMINAL
                }
                replied = {_mid(m.header("In-Reply-To")) for m in smtp.mails}
                calls = stack.calls()
                now = (len(records), len(smtp.mails), len(calls))
                if now != last:
                    last, stable_since = now, time.monotonic()
                complete = wanted <= done and wanted <= replied
                open_calls = any(c["ended_at"] is None for c in calls)
                if (
                    complete
                    and not open_calls
                    and time.monotonic() - stable_since >= self.config.settle_s
                ):
                    quiescent = True
                    break
                await asyncio.sleep(1)
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self._event("quiescent" if quiescent else "not quiescent at the bound; counting anyway")
        return count(planned, await self._records(store), stack.calls(), smtp, quiescent)


def _status(record: dict[str, Any]) -> str | None:
    state = record.get("state")
    if isinstance(state, dict):
        return str(state.get("status")) if state.get("status") else None
    status = record.get("status")
    return str(status) if status else None


_KIND_OF_SUBJECT: list[tuple[str, Callable[[str, Planned], bool]]] = [
    ("sent", lambda s, p: s.startswith(f"Fax to {p.number} sent")),
    ("failed", lambda s, p: s == f"Fax to {p.number} failed"),
    ("rejected", lambda s, p: re.match(r"Your fax to .* was not sent$", s) is not None),
]


def count(
    planned: list[Planned],
    records: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    smtp: SmtpCapture,
    quiescent: bool,
) -> dict[str, Any]:
    by_mid: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("direction") == "inbound":
            continue
        by_mid.setdefault(_mid(str(record.get("source_message_id") or "")), []).append(record)
    problems: list[str] = []
    terminal = lost = duplicate_records = wrong_outcome = incomplete = 0
    for p in planned:
        found = by_mid.get(p.message_id, [])
        finished = [r for r in found if _status(r) in TERMINAL]
        if not finished:
            lost += 1
            states = [_status(r) for r in found]
            problems.append(f"lost: email {p.index} ({p.kind}, {p.message_id}) records {states}")
            continue
        if len(found) > 1:
            duplicate_records += 1
            ids = [r["_id"] for r in found]
            problems.append(f"duplicate records: email {p.index} ({p.message_id}) faxes {ids}")
            continue
        (record,) = finished
        status = _status(record)
        if status != p.expected_status:
            wrong_outcome += 1
            problems.append(
                f"wrong outcome: email {p.index} ({p.kind}) fax {record['_id']} {status}"
            )
            continue
        terminal += 1
        kinds = {n.get("kind") for n in record.get("notifications") or []}
        gaps = []
        if status not in kinds:
            gaps.append(f"no {status} notification")
        state = record.get("state") if isinstance(record.get("state"), dict) else record
        assert isinstance(state, dict)
        if status == "sent" and state.get("pages") != 1:
            gaps.append(f"pages {state.get('pages')}")
        # Not == 3: an attempt claimed but cut off before it dialled (its worker killed,
        # the broker gone) counts too; the calls on the line are checked below.
        if status == "failed" and (record.get("attempts") or 0) < 3:
            gaps.append(f"attempts {record.get('attempts')}")
        if status == "rejected" and not record.get("rejection_reasons"):
            gaps.append("no rejection reasons")
        if gaps:
            incomplete += 1
            problems.append(f"history incomplete: fax {record['_id']}: {', '.join(gaps)}")

    # On the line: completed calls per destination, and nothing for rejected mails.
    completed = Counter(c["to"] for c in calls if c.get("outcome") and c["outcome"].get("success"))
    cut = sum(
        1 for c in calls if c.get("pages_received") and not (c.get("outcome") or {}).get("success")
    )
    duplicates_on_line = 0
    for p in planned:
        if p.kind == "receive" and completed[p.number] > 1:
            duplicates_on_line += completed[p.number] - 1
            problems.append(
                f"duplicate on the line: email {p.index} to {p.number}: "
                f"{completed[p.number]} completed calls"
            )
    # Not failing: more dials to an always-busy number than its emails' attempts allow.
    busy_emails = Counter(p.number for p in planned if p.kind == "busy")
    dialled = Counter(c["to"] for c in calls)
    busy_over_policy = sum(max(0, dialled[n] - 3 * k) for n, k in busy_emails.items())
    reject_numbers = {p.number for p in planned if p.kind == "reject"}
    calls_for_rejected = sum(1 for c in calls if c["to"] in reject_numbers)
    if calls_for_rejected:
        problems.append(f"{calls_for_rejected} calls to numbers of rejected mails")

    # Mail: exactly one, of the right kind, to the sender, in the thread of each email.
    by_reply: dict[str, Planned] = {p.message_id: p for p in planned}
    good: Counter[str] = Counter()
    extra_mails = 0
    for mail in smtp.mails:
        email = by_reply.get(_mid(mail.header("In-Reply-To")))
        subject = mail.header("Subject")
        right = (
            email is not None
            and mail.rcpt_tos == (email.sender,)
            and any(
                kind == email.expected_status and test(subject, email)
                for kind, test in _KIND_OF_SUBJECT
            )
        )
        if email is not None and right and good[email.message_id] == 0:
            good[email.message_id] += 1
            continue
        extra_mails += 1
        problems.append(
            f"extra mail to {mail.rcpt_tos}: {subject!r} "
            f"(In-Reply-To {mail.header('In-Reply-To') or '-'})"
        )
    missing_mails = sum(1 for p in planned if good[p.message_id] == 0)
    for p in planned:
        if good[p.message_id] == 0:
            problems.append(f"missing mail: email {p.index} ({p.kind}) to {p.sender}")

    return {
        "emails": len(planned),
        "terminal": terminal,
        "duplicates_on_line": duplicates_on_line,
        "lost": lost,
        "extra_mails": extra_mails,
        "missing_mails": missing_mails,
        "duplicate_records": duplicate_records,
        "wrong_outcome": wrong_outcome,
        "history_incomplete": incomplete,
        "calls_for_rejected": calls_for_rejected,
        "quiescent": quiescent,
        "kinds": dict(Counter(p.kind for p in planned)),
        "calls": len(calls),
        "calls_completed": sum(completed.values()),
        "calls_cut": cut,
        "busy_calls_over_policy": busy_over_policy,
        "mails": len(smtp.mails),
        "problems": problems,
    }


def dead_letters(rabbit: RabbitServer, vhost: str) -> int:
    """Messages left in the run's dead-letter queues (every one is a failure here)."""
    queues = rabbit.api("GET", f"/api/queues/{urllib.parse.quote(vhost, '')}?columns=name,messages")
    assert isinstance(queues, list)
    return sum(int(q.get("messages") or 0) for q in queues if str(q["name"]).endswith(".dlq"))


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


FAILING = (
    "lost",
    "duplicate_records",
    "wrong_outcome",
    "duplicates_on_line",
    "calls_for_rejected",
    "missing_mails",
    "extra_mails",
    "history_incomplete",
    "dead_letters",
)


def failures(figures: dict[str, Any]) -> list[str]:
    bad = [f"{name}={figures[name]}" for name in FAILING if figures.get(name)]
    if figures.get("terminal") != figures.get("emails"):
        bad.append(f"terminal={figures.get('terminal')} of {figures.get('emails')}")
    return bad


def report(figures: dict[str, Any], out: Path) -> None:
    """Print the figures and write them (with the events and problems) to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    for name in (
        "emails",
        "terminal",
        "duplicates_on_line",
        "lost",
        "extra_mails",
        "missing_mails",
        *FAILING[1:3],
        "history_incomplete",
        "calls_for_rejected",
        "dead_letters",
        "database_outage_s",
        "broker_outage_s",
        "kills",
        "crashes",
        "rabbitmq_restarts",
        "database_restarts",
        "duration_s",
        "seed",
    ):
        print(f"{name:>20}: {figures.get(name)}")
    for problem in figures.get("problems", [])[:50]:
        print(f"  problem: {problem}")
    print(f"figures written to {out}")
