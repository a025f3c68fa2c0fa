"""Helpers for tests that need the real servers (imported by conftest and tests)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from faxbox.shared.contracts import DocumentRef, MailReceived
from faxbox.shared.failover import split_urls


def servers_required() -> bool:
    return bool(os.environ.get("FAXBOX_REQUIRE_SERVERS") or os.environ.get("CI"))


def require_server(name: str, host: str, port: int) -> None:
    """Skip (developer machine) or fail (CI) when nothing listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc}); run deploy/local/up"
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)


# deploy/local/rabbitmq_health.py deletes vhosts with this description once they are stale
# (a killed test run leaves its vhost behind, holding file handles on the node).
SCRATCH_VHOST_DESCRIPTION = "faxbox scratch"


# Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a
# port the kernel handed out for bind(0) can be taken by any outgoing connection (the
# tests open hundreds, to RabbitMQ and FerretDB) between the probe and the server's bind.
_TEST_PORTS = range(20000, 32000)
_ports_rng = random.Random()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on right now, on TCP and UDP alike (``kind`` is kept
    for the callers' sake: SIP listens on both), outside the ephemeral range."""
    del kind
    for _ in range(200):
        port = _ports_rng.choice(_TEST_PORTS)
        try:
            for each in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, each) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free loopback port in {_TEST_PORTS}")


RABBIT_LOG_DIR = Path("/var/log/rabbitmq")


def rabbit_diagnostics(lines: int = 6) -> str:
    """What the local node says about itself: free disk, and its last error lines."""
    parts: list[str] = []
    with contextlib.suppress(OSError):
        stat = os.statvfs("/var/lib/rabbitmq")
        parts.append(f"free disk {stat.f_bavail * stat.f_frsize // 2**20} MiB")
    errors: list[str] = []
    for log in sorted(RABBIT_LOG_DIR.glob("*.log")):
        with contextlib.suppress(OSError), log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 200_000))
            tail = handle.read().decode(errors="replace").splitlines()
            errors += [line[:300] for line in tail if "[error]" in line or "[critical]" in line]
    parts.append("last node errors: " + (" | ".join(errors[-lines:]) or "none"))
    return "; ".join(parts)


_LOCAL_NODE_RESTARTED: list[str] = []
LOCAL_RABBITMQ_API = "http://127.0.0.1:15672"


def restart_local_node_once(rabbit: RabbitServer, why: str) -> bool:
    """Restart the machine's RabbitMQ node (deploy/local/rabbitmq.sh starts it again),
    once per session and only that node; False when that is not for us to do."""
    if _LOCAL_NODE_RESTARTED or rabbit.api_url != LOCAL_RABBITMQ_API or os.geteuid() != 0:
        return False
    _LOCAL_NODE_RESTARTED.append(why)
    print(f"\nWARNING: restarting the local RabbitMQ node: {why}", file=sys.stderr, flush=True)
    repo = Path(__file__).resolve().parents[1]
    try:
        stopped = subprocess.run(["rabbitmqctl", "-q", "stop"], timeout=120, check=False)
    except subprocess.TimeoutExpired:
        stopped = None
    if stopped is None or stopped.returncode != 0:
        # Only this node (its pid file), never the nodes of a local cluster.
        pid_file = Path(f"/var/lib/rabbitmq/mnesia/rabbit@{socket.gethostname().split('.')[0]}.pid")
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 9)
    done = subprocess.run(
        ["bash", str(repo / "deploy/local/rabbitmq.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{why}; restarting the node failed: {done.stderr[-2000:]}")
    return True


@dataclass(frozen=True)
class RabbitServer:
    amqp_url: str
    api_url: str
    user: str
    password: str

    @classmethod
    def from_env(cls) -> RabbitServer:
        amqp_url = os.environ.get("FAXBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        parts = urllib.parse.urlsplit(split_urls(amqp_url)[0])
        # The management API var/env gives the local portal (deploy/local/up).
        api_url = os.environ.get("FAXBOX_PORTAL_RABBITMQ_API_URL", "http://127.0.0.1:15672")
        return cls(
            amqp_url=amqp_url,
            api_url=api_url.rstrip("/"),
            user=urllib.parse.unquote(parts.username or "guest"),
            password=urllib.parse.unquote(parts.password or "guest"),
        )

    def api(
        self, method: str, path: str, body: object | None = None, timeout_s: float = 10
    ) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def add_scratch_vhost(self, kind: str) -> str:
        """A new vhost ``<kind>-<random>`` this user may use fully, running; its name.

        If the machine's node accepts the vhost but cannot start it, the node is
        restarted once per test session (as deploy/local/up restarts a node that cannot
        do work), with a warning that says why; the tests after it then still run.
        """
        name = self._new_scratch_vhost(kind)
        try:
            self.await_vhost_running(name)
        except RuntimeError as exc:
            if not restart_local_node_once(self, str(exc)):
                raise
            self.delete_vhost(name)
            name = self._new_scratch_vhost(kind)
            self.await_vhost_running(name)
        return name

    def _new_scratch_vhost(self, kind: str) -> str:
        name = f"{kind}-{uuid.uuid4().hex[:10]}"
        quoted = urllib.parse.quote(name, "")
        description = f"{SCRATCH_VHOST_DESCRIPTION} {int(time.time())}"
        self.api("PUT", f"/api/vhosts/{quoted}", {"description": description})
        self.api(
            "PUT",
            f"/api/permissions/{quoted}/{urllib.parse.quote(self.user, '')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return name

    def vhost_states(self, name: str) -> dict[str, str]:
        """The vhost's state on each node (``running``, ``stopped``, ``nodedown``)."""
        found = self.api("GET", f"/api/vhosts/{urllib.parse.quote(name, '')}")
        states = found.get("cluster_state") if isinstance(found, dict) else None
        return {str(k): str(v) for k, v in (states or {}).items()}

    def await_vhost_running(self, name: str, timeout_s: float = 30) -> None:
        """Until the vhost runs on every node, restarting it where it stopped.

        A node refuses connections to a vhost that is not running with 541 INTERNAL_ERROR
        ("vhost is down"), which would show up as a confusing error in whichever test
        connects first; here it is a failure that says what the node reports.
        """
        deadline = time.monotonic() + timeout_s
        restarted: set[str] = set()
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.vhost_states(name)
            if states and all(state == "running" for state in states.values()):
                return
            for node, state in states.items():
                if state == "stopped" and node not in restarted:
                    restarted.add(node)
                    with contextlib.suppress(urllib.error.HTTPError):
                        self.api(
                            "POST",
                            f"/api/vhosts/{urllib.parse.quote(name, '')}/start/"
                            f"{urllib.parse.quote(node, '')}",
                        )
            time.sleep(0.2)
        raise RuntimeError(
            f"RabbitMQ vhost {name} does not run (states {states}, restarted on "
            f"{sorted(restarted)}); {rabbit_diagnostics()}"
        )

    def delete_vhost(self, name: str) -> None:
        """Best effort: a vhost left behind is deleted by deploy/local/up once stale."""
        with contextlib.suppress(urllib.error.URLError, TimeoutError):
            # Deleting a vhost stops its quorum queues one by one: seconds, not milliseconds.
            self.api("DELETE", f"/api/vhosts/{urllib.parse.quote(name, '')}", timeout_s=60)

    @contextlib.contextmanager
    def scratch_vhost(self, kind: str) -> Iterator[str]:
        name = self.add_scratch_vhost(kind)
        try:
            yield name
        finally:
            self.delete_vhost(name)

    def url_for_vhost(self, vhost: str) -> str:
        """FAXBOX_AMQP_URL for the vhost: every node's URL, when it lists a cluster's."""
        path = "/" + urllib.parse.quote(vhost, "")
        return ",".join(
            urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=path))
            for url in split_urls(self.amqp_url)
        )


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    users: tuple[str, ...]
    password: str


def sample_mail_received(n: int = 1) -> MailReceived:
    """A MailReceived whose raw mail reference is well-formed; the mail itself is not stored."""
    return MailReceived(
        fax_id=f"fax{n}",
        mailbox="INBOX",
        uid_validity=1,
        uid=n,
        raw=DocumentRef(
            account_id="intake",
            month="202611",
            file_id=f"raw{n}",
            filename="mail.eml",
            content_type="message/rfc822",
            length=10,
            sha256=hashlib.sha256(b"x").hexdigest(),
        ),
        received_at=datetime.now(UTC),
    )


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus the Compose Spec's merge tags: !reset reads as None, !override as its
    value."""


def _overridden(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    assert isinstance(node, yaml.MappingNode), node
    return loader.construct_mapping(node)


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor("!override", _overridden)


def load_compose_file(path: Path) -> dict[str, Any]:
    """One compose file as written (no merging, no interpolation)."""
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=_ComposeLoader)
    return data
