"""The whole system as real processes, isolated for one test module (or one chaos run).

Every service runs as ``python -m faxbox.<name>`` with its own log file, on a fresh
RabbitMQ vhost and exchange prefix, a fresh database, its own ports (pstn-sim SIP and
control API, the inbound receiver's SIP port), one IMAP intake mailbox of the local
Dovecot (emptied first) and an SMTP server of the caller's choosing (the test's own
aiosmtpd capture). Services can be killed and restarted one by one (chaos test).

Also used by benchmarks/e2e_throughput.py and tests/chaos.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from faxbox.demo.tenant import DemoTenant, DemoUser, Seeded, seed
from faxbox.shared.store import RetryPolicy, Role, Store
from tests import children
from tests.relay import LocalRelay
from tests.support import free_port

# The order they start in: the far end and the receiving side before anything dials.
SERVICES: tuple[str, ...] = (
    "pstn_sim",
    "history",
    "notifier",
    "webhooks",
    "inbound",
    "transmitter",
    "validator",
    "mail_poller",
)
# Services that may run as several replicas here (pstn-sim is the carrier; inbound
# replicas each listen on a SIP port of their own, and pstn-sim is given the routes to
# all of them, as a carrier is given an operator's SBCs).
REPLICABLE = frozenset(SERVICES) - {"pstn_sim"}
# The portal runs where a test sends through the API (Stack(services=WITH_PORTAL)).
WITH_PORTAL: tuple[str, ...] = (*SERVICES, "portal")
SECRET_KEY = "e2e-secret-key-for-webhook-signing"
REALM = "e2e.faxbox.test"
ALICE = DemoUser("alice@faxbox.test", "+16465550101", "ALICE E2E", "e2e-password", Role.USER)
BOB = DemoUser("bob@faxbox.test", "+16465550102", "BOB E2E", "e2e-password", Role.USER)


def replica_name(service: str, index: int) -> str:
    """A process's name: the service's own for the first replica, ``<service>.<n>`` after."""
    return service if index == 1 else f"{service}.{index}"


def service_of(process: str) -> str:
    return process.partition(".")[0]


async def eventually(
    check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (e.g. the validator's renderers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return total


# --- mail in and out ------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    host: str
    port: int
    user: str
    password: str
    # A folder of its own keeps a run apart from others using the same IMAP user at the
    # same time (the chaos run next to e2e tests or benchmarks).
    folder: str = "INBOX"
    processed_folder: str = "Faxbox/Processed"
    oversize_folder: str = "Faxbox/Oversize"
    failed_folder: str = "Faxbox/Failed"

    @property
    def folders(self) -> tuple[str, ...]:
        return (self.folder, self.processed_folder, self.oversize_folder, self.failed_folder)

    @contextlib.contextmanager
    def connect(self) -> Iterator[imaplib.IMAP4]:
        imap = imaplib.IMAP4(self.host, self.port, timeout=15)
        try:
            imap.login(self.user, self.password)
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def empty(self) -> None:
        """Delete every message in every folder, so a test sees only its own mail."""
        with self.connect() as imap:
            _, folders = imap.list()
            for line in folders or []:
                if not isinstance(line, bytes):
                    continue
                match = re.match(r'\(.*?\) (?:NIL|"(?:[^"\\]|\\.)*") (.*)$', line.decode())
                if match is None:
                    continue
                name = match.group(1).strip('"')
                status, count = imap.select(f'"{name}"')
                if status != "OK":
                    continue
                if count and count[0] in (b"0", None):
                    imap.close()
                    continue
                imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                imap.expunge()
                imap.close()

    def create_folders(self) -> None:
        """Create the watched folder and those mail leaves it for (flat names: any
        delimiter will do)."""
        with self.connect() as imap:
            for name in self.folders:
                status, detail = imap.create(f'"{name}"')
                if status != "OK" and b"ALREADYEXISTS" not in b" ".join(
                    d for d in detail if isinstance(d, bytes)
                ):
                    raise RuntimeError(f"IMAP CREATE {name} failed: {detail}")

    def delete_folders(self) -> None:
        with self.connect() as imap:
            for name in self.folders:
                imap.delete(f'"{name}"')

    def append(self, message: EmailMessage | bytes) -> None:
        raw = message if isinstance(message, bytes) else message.as_bytes()
        with self.connect() as imap:
            status, detail = imap.append(f'"{self.folder}"', None, None, raw)
            if status != "OK":
                raise RuntimeError(f"IMAP APPEND failed: {detail}")

    def settings_json(self) -> str:
        return json.dumps(
            [
                {
                    "host": self.host,
                    "port": self.port,
                    "security": "none",
                    "auth": "login",
                    "username": self.user,
                    "password": self.password,
                    "folder": self.folder,
                    "processed_folder": self.processed_folder,
                    "oversize_folder": self.oversize_folder,
                    "failed_folder": self.failed_folder,
                }
            ]
        )


@dataclass(frozen=True)
class CapturedMail:
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    def header(self, name: str) -> str:
        return str(self.message.get(name, ""))

    def attachments(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            name = part.get_filename()
            if name and isinstance(payload, bytes):
                found[name] = payload
        return found

    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        return str(body.get_content()) if body is not None else ""


class _Capture:
    def __init__(self, mails: list[CapturedMail]) -> None:
        self.mails = mails

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = BytesParser(policy=default_policy).parsebytes(envelope.original_content or b"")
        assert isinstance(message, EmailMessage)
        self.mails.append(CapturedMail(tuple(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpCapture:
    """A real SMTP server (aiosmtpd) in a thread; every mail the notifier sends lands here."""

    def __init__(self) -> None:
        self.mails: list[CapturedMail] = []
        self.port = free_port()
        self._controller = Controller(_Capture(self.mails), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[CapturedMail]:
        return [m for m in self.mails if address in m.rcpt_tos]


# --- the services ---------------------------------------------------------------------


@dataclass
class Stack:
    amqp_url: str
    prefix: str
    mongo_url: str
    mongo_db: str
    mailbox: Mailbox
    smtp_port: int
    directory: Path
    # The MTA in front of the intake mailbox: mail submitted through it (logged in) is
    # stamped with its Authentication-Results, which the validator is told to trust.
    relay: LocalRelay | None = None
    pace: float = 20.0
    services: tuple[str, ...] = SERVICES
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pstn_sip_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    pstn_http_port: int = field(default_factory=free_port)
    inbound_sip_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    portal_port: int = field(default_factory=free_port)
    restarts: dict[str, int] = field(default_factory=dict)
    # Replicas per service (REPLICABLE ones), 1 when not named.
    replicas: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        many = {name for name, n in self.replicas.items() if n > 1}
        if many - REPLICABLE:
            raise ValueError(f"only {sorted(REPLICABLE)} run as replicas here")
        # The first inbound replica's port is ``inbound_sip_port``; the others', new ones.
        self.inbound_sip_ports: tuple[int, ...] = (
            self.inbound_sip_port,
            *(free_port(socket.SOCK_DGRAM) for _ in range(self.replicas.get("inbound", 1) - 1)),
        )

    @property
    def processes(self) -> tuple[str, ...]:
        """Every process of the stack, in start order: replicas after their first."""
        return tuple(
            replica_name(name, i)
            for name in self.services
            for i in range(1, self.replicas.get(name, 1) + 1)
        )

    @property
    def portal_url(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    @property
    def pstn_url(self) -> str:
        return f"http://127.0.0.1:{self.pstn_http_port}"

    def env(self, name: str) -> dict[str, str]:
        env = {
            **os.environ,
            "FAXBOX_AMQP_URL": self.amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": self.prefix,
            "FAXBOX_RETRY_DELAYS_S": "[1,2,4]",
            "FAXBOX_MONGO_URL": self.mongo_url,
            "FAXBOX_MONGO_DB": self.mongo_db,
            "FAXBOX_LOG_LEVEL": "INFO",
            "FAXBOX_SHUTDOWN_GRACE_S": "10",
            # mail-poller
            "FAXBOX_MAIL_POLLER_MAILBOXES": self.mailbox.settings_json(),
            "FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST": "127.0.0.1",  # as deploy/local/run
            "FAXBOX_MAIL_POLLER_LEASE_TTL_S": "4",
            "FAXBOX_MAIL_POLLER_LEASE_RENEW_S": "1",
            # notifier
            "FAXBOX_NOTIFIER_SMTP_HOST": "127.0.0.1",
            "FAXBOX_NOTIFIER_SMTP_PORT": str(self.smtp_port),
            "FAXBOX_NOTIFIER_SMTP_SECURITY": "none",
            "FAXBOX_NOTIFIER_LEASE_S": "10",
            # history: a killed writer's turn passes on after 4 s, as the leases above
            "FAXBOX_HISTORY_LEASE_TTL_S": "4",
            # transmitter
            "FAXBOX_TRANSMITTER_LINE_PACE": str(self.pace),
            "FAXBOX_TRANSMITTER_LEASE_S": "4",
            "FAXBOX_TRANSMITTER_BUSY_RETRY_S": "1",
            "FAXBOX_TRANSMITTER_SPOOL_DIR": str(self.directory / "spool-transmitter"),
            "FAXBOX_TRANSMITTER_ANSWER_TIMEOUT_S": "20",
            "FAXBOX_TRANSMITTER_MEDIA_SILENCE_S": "60",
            "FAXBOX_TRANSMITTER_CANCEL_POLL_S": "0.3",
            # webhooks (receivers in the tests listen on loopback) and portal
            "FAXBOX_SECRET_KEY": SECRET_KEY,
            "FAXBOX_WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "FAXBOX_WEBHOOKS_RETRY_SCHEDULE_S": "[1,2,4]",
            "FAXBOX_PORTAL_PORT": str(self.portal_port),
            "FAXBOX_SESSION_SECRET": "e2e-session-secret",
            # inbound
            "FAXBOX_INBOUND_LINE_PACE": str(self.pace),
            "FAXBOX_INBOUND_SIP_PORT": str(self.inbound_sip_port),
            "FAXBOX_INBOUND_SPOOL_DIR": str(self.directory / "spool-inbound"),
            # The tests seed the carrier after the services start; its first call comes
            # in a second or two, before the default 5 s re-read would know the carrier.
            "FAXBOX_INBOUND_CARRIERS_REFRESH_S": "0.2",
            # every service's outbox sweep (inbound's after a broker outage, the chaos run)
            "FAXBOX_OUTBOX_SWEEP_INTERVAL_S": "2",
            # pstn-sim
            "FAXBOX_PSTN_SIM_SIP_PORT": str(self.pstn_sip_port),
            "FAXBOX_PSTN_SIM_HTTP_PORT": str(self.pstn_http_port),
            "FAXBOX_PSTN_SIM_PACE": str(self.pace),
            "FAXBOX_PSTN_SIM_DATA_DIR": str(self.directory / "pstn-sim"),
            "FAXBOX_PSTN_SIM_INBOUND_URI": ",".join(
                f"sip:127.0.0.1:{port}" for port in self.inbound_sip_ports
            ),
            "FAXBOX_PSTN_SIM_ANSWER_TIMEOUT_S": "20",
            # validator
            "FAXBOX_VALIDATOR_AUTHSERV_IDS": json.dumps(
                [self.relay.authserv_id] if self.relay else []
            ),
        }
        env.update(self.extra_env)
        if name != service_of(name):  # a second replica: its own spool and SIP port
            replica = name.partition(".")[2]
            for key in ("FAXBOX_TRANSMITTER_SPOOL_DIR", "FAXBOX_INBOUND_SPOOL_DIR"):
                env[key] = f"{env[key]}.{replica}"
            if service_of(name) == "inbound":
                env["FAXBOX_INBOUND_SIP_PORT"] = str(self.inbound_sip_ports[int(replica) - 1])
        return env

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def log_of(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str) -> None:
        log = self.log_path(name).open("ab")
        self.procs[name] = children.spawn(
            [sys.executable, "-m", f"faxbox.{service_of(name)}"],
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def _ready_marks(self, name: str) -> int:
        mark = "control API on" if service_of(name) == "pstn_sim" else "service ready"
        return self.log_of(name).count(mark)

    async def wait_ready(self, name: str, starts: int = 1, timeout_s: float = 60) -> None:
        def ready() -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(
                    f"faxbox.{name} exited with {proc.returncode}:\n{self.log_of(name)[-3000:]}"
                )
            return self._ready_marks(name) >= starts

        await eventually(ready, timeout_s, f"faxbox.{name} to be ready")

    async def start_all(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in self.processes:
            self.start(name)
        for name in self.processes:
            await self.wait_ready(name)

    async def restart(self, name: str, timeout_s: float = 60) -> None:
        """Start a service again after it was killed; wait until it is ready."""
        starts = self._ready_marks(name) + 1
        self.start(name)
        self.restarts[name] = self.restarts.get(name, 0) + 1
        await self.wait_ready(name, starts, timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(30)

    def stop_all(self) -> None:
        children.end([proc.pid for proc in self.procs.values()], grace_s=20)
        for proc in self.procs.values():
            proc.wait()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running service, with its children, used so far."""
        return {name: _tree_cpu_s(proc.pid) for name, proc in self.procs.items()}

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    # --- mail in -----------------------------------------------------------------------

    def submit(
        self, message: EmailMessage, login: str | None = None, recipients: list[str] | None = None
    ) -> None:
        """Send as a user does: to the relay's submission port, logged in (by default as
        the From address, with the Dovecot test password)."""
        assert self.relay is not None, "this stack has no relay"
        sender = str(message["From"])
        self.relay.submit(
            message,
            login or sender,
            os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test"),
            sender=sender,
            recipients=recipients,
        )

    # --- pstn-sim ----------------------------------------------------------------------

    def pstn(self, path: str, data: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.pstn_url}{path}",
            data=json.dumps(data).encode() if data is not None else None,
            method="POST" if data is not None else "GET",
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def calls(self, to: str | None = None) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.pstn("/calls")
        return [c for c in calls if to is None or c["to"] == to]

    async def seed(
        self, store: Store, users: Iterable[DemoUser] = (ALICE, BOB), channels: int = 32
    ) -> Seeded:
        tenant = DemoTenant(
            realm=REALM,
            account_name="E2E",
            users=tuple(users),
            carrier_name="pstn-sim",
            carrier_port=self.pstn_sip_port,
            carrier_channels=channels,
            retry=RetryPolicy(attempts=3, delays_s=[1, 2]),
        )
        return await seed(store, tenant)
