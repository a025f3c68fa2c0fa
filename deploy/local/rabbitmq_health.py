"""Health check and tidy-up of the machine's RabbitMQ node (used by deploy/local/rabbitmq.sh).

    python3 rabbitmq_health.py check --min-fds 4096   exit 1 when the node is sick
    python3 rabbitmq_health.py tidy                   delete stale scratch vhosts

Standard library only: it runs before the project's virtualenv exists.

"Sick" means the node answers its management API but can no longer do work: its open-file
limit is too low for the project's quorum queues, or creating and deleting a vhost does not
finish within seconds (the symptom when its file handle cache is exhausted).

Scratch vhosts are the ones tests, benchmarks and the chaos run create for themselves. They
carry a description ``faxbox scratch <unix time>``; a killed run leaves its vhost behind, and
each one holds message stores and quorum queues (file handles and memory) until deleted.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

SCRATCH_DESCRIPTION = "faxbox scratch"
# Vhosts from before the description existed: test-…, bench-…, chaos-…, probe-…
LEGACY_SCRATCH_NAME = re.compile(r"^(test|bench|chaos|probe)-[0-9a-z-]+$")
STALE_AFTER_S = 2 * 3600


class Api:
    def __init__(self, base_url: str, user: str, password: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Basic {self.token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def check(api: Api, min_fds: int) -> list[str]:
    problems: list[str] = []
    for name, fd_total in node_file_limits(api).items():
        if fd_total < min_fds:
            problems.append(f"node {name} may open {fd_total} files (< {min_fds})")
    name = f"probe-{uuid.uuid4().hex[:10]}"
    quoted = urllib.parse.quote(name, "")
    started = time.monotonic()
    try:
        api.call("PUT", f"/api/vhosts/{quoted}", {"description": scratch_description()})
        # A node can accept a vhost it then fails to start: every connection to it is
        # refused with 541 INTERNAL_ERROR ("vhost is down").
        states = vhost_states(api, name)
        api.call("DELETE", f"/api/vhosts/{quoted}")
    except (OSError, urllib.error.URLError) as exc:
        problems.append(f"creating and deleting vhost {name} failed: {exc}")
    else:
        elapsed = time.monotonic() - started
        if not states or any(state != "running" for state in states.values()):
            problems.append(f"a new vhost does not run: {states}")
        elif elapsed > 5:
            problems.append(f"creating and deleting vhost {name} took {elapsed:.1f} s")
    return problems


def vhost_states(api: Api, name: str, wait_s: float = 5) -> dict[str, str]:
    """The vhost's state per node, once running everywhere or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        found = api.call("GET", f"/api/vhosts/{urllib.parse.quote(name, '')}")
        raw = found.get("cluster_state") if isinstance(found, dict) else None
        states = {str(k): str(v) for k, v in (raw or {}).items()}
        if (states and all(v == "running" for v in states.values())) or (
            time.monotonic() > deadline
        ):
            return states
        time.sleep(0.1)


def node_file_limits(api: Api, wait_s: float = 30) -> dict[str, int]:
    """fd_total per node; a node that just started reports it after its first stats emission."""
    deadline = time.monotonic() + wait_s
    while True:
        nodes = api.call("GET", "/api/nodes")
        assert isinstance(nodes, list)
        limits = {str(n.get("name")): int(n["fd_total"]) for n in nodes if "fd_total" in n}
        if len(limits) == len(nodes) or time.monotonic() > deadline:
            return limits
        time.sleep(1)


def scratch_description(now: float | None = None) -> str:
    return f"{SCRATCH_DESCRIPTION} {int(time.time() if now is None else now)}"


def is_stale_scratch(vhost: dict[str, object], now: float) -> bool:
    name = str(vhost.get("name", ""))
    description = str(vhost.get("description") or "")
    if description.startswith(SCRATCH_DESCRIPTION):
        try:
            created = float(description.split()[-1])
        except ValueError:
            return False
        return now - created > STALE_AFTER_S
    return not description and bool(LEGACY_SCRATCH_NAME.match(name))


def tidy(api: Api) -> list[str]:
    vhosts = api.call("GET", "/api/vhosts")
    connections = api.call("GET", "/api/connections?columns=vhost")
    assert isinstance(vhosts, list)
    assert isinstance(connections, list)
    busy = {c.get("vhost") for c in connections}
    now = time.time()
    deleted: list[str] = []
    for vhost in vhosts:
        name = str(vhost.get("name", ""))
        if name in busy or not is_stale_scratch(vhost, now):
            continue
        try:
            api.call("DELETE", f"/api/vhosts/{urllib.parse.quote(name, '')}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # another clone's tidy-up was quicker
                raise
        deleted.append(name)
    return deleted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check", "tidy"])
    parser.add_argument("--api", default="http://127.0.0.1:15672")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--min-fds", type=int, default=4096)
    args = parser.parse_args()
    if args.command == "check":
        api = Api(args.api, args.user, args.password, timeout_s=10)
        try:
            problems = check(api, args.min_fds)
        except (OSError, urllib.error.URLError) as exc:
            problems = [f"management API: {exc}"]
        for problem in problems:
            print(f"rabbitmq: {problem}", file=sys.stderr)
        return 1 if problems else 0
    # Deleting a vhost with many quorum queues takes a while.
    deleted = tidy(Api(args.api, args.user, args.password, timeout_s=120))
    if deleted:
        print(f"rabbitmq: deleted {len(deleted)} stale scratch vhost(s): {' '.join(deleted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
