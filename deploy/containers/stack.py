"""Run compose.yaml + compose.local.yaml under podman: up, down, status.

podman-compose turns the compose files into podman containers. What it cannot do with
Debian's podman 4.3 is wait for `depends_on: {condition: service_healthy}` (it needs
podman 4.6 for that and skips the wait), and podman 4.3 runs a container's health check
only from a systemd timer, which a machine without systemd never fires. So `up` has
podman-compose create the containers, then starts each one only when everything it
depends on is healthy, running the health checks compose defines itself
(`podman healthcheck run`) until each container passes. `down` stops and removes the
project's containers (and with --volumes its volumes) and checks that none is left.

    python deploy/containers/stack.py up [--project NAME] [--timeout S]
    python deploy/containers/stack.py down [--project NAME] [--volumes]
    python deploy/containers/stack.py status [--project NAME]

Run through deploy/containers/up and down, which set CONTAINERS_CONF first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("compose.yaml", "compose.local.yaml")
PODMAN_COMPOSE = REPO / ".venv/bin/podman-compose"
PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
POLL_S = 2.0


class StackError(Exception):
    """The stack could not be brought to the state asked for; the message says why."""


@dataclass(frozen=True)
class Service:
    name: str
    depends_on: frozenset[str]
    has_healthcheck: bool
    image: str


def say(message: str) -> None:
    print(f"==> containers: {message}", flush=True)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def podman_compose(project: str, *args: str) -> subprocess.CompletedProcess[str]:
    files = [arg for name in COMPOSE_FILES for arg in ("-f", str(REPO / name))]
    command = [str(PODMAN_COMPOSE), "-p", project, *files, *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if result.returncode != 0:
        raise StackError(
            f"podman-compose {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def services_of(project: str) -> dict[str, Service]:
    """The services compose would run (active profiles only), from the merged config."""
    config: dict[str, Any] = yaml.safe_load(podman_compose(project, "config").stdout)
    services: dict[str, Service] = {}
    for name, spec in config["services"].items():
        depends = spec.get("depends_on") or {}
        check = spec.get("healthcheck") or {}
        services[name] = Service(
            name=name,
            depends_on=frozenset(depends),
            has_healthcheck=bool(check.get("test")) and not check.get("disable"),
            image=spec["image"],
        )
    return services


def containers_of(project: str) -> dict[str, str]:
    """Container name by compose service, for the project's containers that exist."""
    listed = podman("ps", "-a", "--filter", f"label={PROJECT_LABEL}={project}", "--format", "json")
    found: dict[str, str] = {}
    for entry in json.loads(listed.stdout or "[]"):
        found[entry["Labels"][SERVICE_LABEL]] = entry["Names"][0]
    return found


def volumes_of(project: str) -> list[str]:
    listed = podman("volume", "ls", "--filter", f"label={PROJECT_LABEL}={project}", "-q")
    return listed.stdout.split()


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def state(container: str) -> str:
    return podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()


def healthy(container: str) -> bool:
    return podman("healthcheck", "run", container, check=False).returncode == 0


def logs(container: str) -> str:
    result = podman("logs", "--tail", "40", container, check=False)
    return (result.stdout + result.stderr).strip()


def up(project: str, timeout_s: float) -> None:
    services = services_of(project)
    missing = [s.image for s in services.values() if not image_exists(s.image)]
    if missing:
        raise StackError(f"images missing: {', '.join(missing)}; run deploy/containers/build")
    podman_compose(project, "up", "-d", "--no-start")
    names = containers_of(project)
    absent = sorted(set(services) - set(names))
    if absent:
        raise StackError(f"podman-compose created no container for {', '.join(absent)}")

    started: dict[str, float] = {}
    ready: set[str] = set()
    while True:
        for service in services.values():
            if service.name not in started and service.depends_on <= ready:
                podman("start", names[service.name])
                started[service.name] = time.monotonic()
                say(f"started {service.name} ({names[service.name]})")
        waiting = sorted(started.keys() - ready)
        if not waiting:
            break
        for name in waiting:
            container = names[name]
            status = state(container)
            if status != "running":
                raise StackError(f"{name} is {status}; its last lines:\n{logs(container)}")
            if not services[name].has_healthcheck or healthy(container):
                ready.add(name)
                say(f"{name} healthy after {time.monotonic() - started[name]:.0f} s")
            elif time.monotonic() - started[name] > timeout_s:
                raise StackError(
                    f"{name} not healthy after {timeout_s:.0f} s; last lines:\n{logs(container)}"
                )
        if started.keys() - ready:
            time.sleep(POLL_S)
    if len(ready) < len(services):
        unmet = {
            s.name: sorted(s.depends_on - ready) for s in services.values() if s.name not in ready
        }
        raise StackError(f"these cannot start, their dependencies never came up: {unmet}")
    say(f"{len(ready)} services up and healthy (project {project})")


def down(project: str, volumes: bool) -> None:
    if containers_of(project):
        podman_compose(project, "down", *(["--volumes"] if volumes else []))
    left = containers_of(project)
    if left:
        # Whatever compose did not remove (e.g. a container of a service no longer in
        # the files) goes too: `down` leaves nothing of the project running.
        podman("rm", "--force", "--depend", *left.values(), check=False)
    if volumes:
        for volume in volumes_of(project):
            podman("volume", "rm", "--force", volume, check=False)
    left = containers_of(project)
    if left:
        raise StackError(f"containers still there after down: {', '.join(sorted(left.values()))}")
    if volumes and volumes_of(project):
        raise StackError(f"volumes still there after down: {', '.join(volumes_of(project))}")
    say(f"project {project} is down{' and its volumes removed' if volumes else ''}")


def status(project: str) -> bool:
    """Prints each service's state and health (checks run now); True when all are healthy."""
    names = containers_of(project)
    if not names:
        say(f"project {project} has no containers")
        return False
    all_healthy = True
    for name, container in sorted(names.items()):
        current = state(container)
        health = "healthy" if current == "running" and healthy(container) else "unhealthy"
        all_healthy &= health == "healthy"
        print(f"  {name:<12} {container:<28} {current:<8} {health}")
    return all_healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--project", default="faxbox", help="compose project name (faxbox)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds for each service")
    parser.add_argument("--volumes", action="store_true", help="down: remove the volumes too")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.project, args.timeout)
        elif args.command == "down":
            down(args.project, args.volumes)
        else:
            return 0 if status(args.project) else 1
    except StackError as exc:
        print(f"ERROR: containers: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
