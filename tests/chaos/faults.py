"""The servers a chaos run breaks and brings back: the 3-node RabbitMQ cluster (a node
SIGKILLed and started again, or all of them stopped for an outage) and this clone's
FerretDB (SIGKILLed and started again). Whatever happens, they end as they were found."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from faxbox.shared.failover import split_urls
from tests.support import RabbitServer

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "deploy" / "local" / "rabbitmq_cluster.sh"
CLUSTER_NODES = 3


def run_command(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip()


class RabbitCluster:
    """The local cluster of deploy/local/rabbitmq_cluster.sh: node K is faxbox-K@host,
    AMQP on 5680+K, management on 15680+K."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.stopped = False

    def script(self, *args: str, timeout_s: float = 400) -> str:
        env = {**os.environ, "FAXBOX_RABBITMQ_NODES": str(CLUSTER_NODES)}
        return run_command(["bash", str(CLUSTER_SCRIPT), *args], timeout_s, env)

    def running(self) -> bool:
        return "down" not in self.script("status")

    def server(self, urls: tuple[str, ...]) -> RabbitServer:
        first = urllib.parse.urlsplit(urls[0])
        return RabbitServer(
            amqp_url=",".join(urls),
            api_url=f"http://127.0.0.1:{(first.port or 5681) + 10000}",
            user=urllib.parse.unquote(first.username or "guest"),
            password=urllib.parse.unquote(first.password or "guest"),
        )

    def kill(self, node: int) -> None:
        self.down.add(node)
        self.script("kill", str(node))

    def start(self, node: int, rabbit: RabbitServer, vhost: str) -> None:
        self.script("start", str(node))
        self.down.discard(node)
        # A node back from a crash runs the vhost again only once it has recovered it.
        rabbit.await_vhost_running(vhost, timeout_s=120)

    def stop_all(self) -> None:
        self.stopped = True
        self.script("down")

    def start_all(self) -> None:
        self.script("up")
        self.stopped = False
        self.down.clear()

    def ensure_running(self) -> None:
        if self.stopped or self.down:
            self.start_all()


@contextlib.contextmanager
def cluster_for(rabbit: RabbitServer) -> Iterator[tuple[RabbitServer, RabbitCluster]]:
    """The cluster the run uses: the one FAXBOX_AMQP_URL lists if it lists three nodes,
    else the local one, started here (about 30 s) and stopped again afterwards if it was
    not running before."""
    cluster = RabbitCluster()
    urls = split_urls(rabbit.amqp_url)
    if len(urls) >= CLUSTER_NODES:
        yield cluster.server(urls), cluster
        return
    if os.geteuid() != 0:
        raise RuntimeError("the chaos run starts the local RabbitMQ cluster as root")
    was_running = cluster.running()
    cluster.script("up")
    try:
        yield cluster.server(split_urls(cluster.script("urls"))), cluster
    finally:
        if not was_running:
            cluster.script("down")


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
        run_command(["bash", str(self.repo / "deploy" / "local" / "ferretdb.sh")], 120, env)
        self.stopped = False

    def ensure_running(self) -> None:
        if self.stopped:
            self.start()


def check_restartable(mongo_url: str) -> None:
    """Fail early (not skip) when this clone's FerretDB cannot be restarted from here."""
    mongo = urllib.parse.urlsplit(mongo_url)
    # deploy/local/ferretdb.sh listens on FAXBOX_LOCAL_MONGO_PORT (default 27017).
    ours = int(os.environ.get("FAXBOX_LOCAL_MONGO_PORT", "27017"))
    if mongo.hostname not in ("127.0.0.1", "localhost") or (mongo.port or 27017) != ours:
        raise RuntimeError(f"{mongo_url} is not this clone's FerretDB")
    FerretDB().pid()
    if not CLUSTER_SCRIPT.exists():
        raise RuntimeError(f"{CLUSTER_SCRIPT} is missing")
