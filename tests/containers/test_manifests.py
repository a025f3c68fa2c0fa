"""compose.yaml, compose.local.yaml and deploy/k8s read by the real loaders.

- compose-go v2 (the loader behind `docker compose config`), through the small program in
  deploy/containers/composecheck, built from the Go module proxy here (go.sum pins it);
- podman-compose, which runs the files here: what it makes of compose.yaml, and of
  compose.yaml with compose.local.yaml, must be what compose-go makes of them, or the
  stack that runs is not the one operators get;
- kustomize (deploy/containers/kustomize.sh: a pinned kustomize built from the Go module
  proxy, so no kubectl is needed) on deploy/k8s.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.containers.conftest import CONTAINERS, ROOT, missing, tool

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

PASSWORDS = {
    "FAXBOX_RABBITMQ_PASSWORD": "rabbit-pw",
    "FAXBOX_MONGO_PASSWORD": "mongo-pw",
    "FAXBOX_IMAP_PASSWORD": "imap-pw",
    "FAXBOX_SECRET_KEY": "a-secret-key-of-at-least-32-characters",
    "FAXBOX_GRAFANA_PASSWORD": "grafana-pw",
}
FILES = ("compose.yaml", "compose.local.yaml")
# compose.yaml's development mail server, built from the repository (deploy/mail).
MAIL_BUILD = {"context": str(ROOT / "deploy"), "dockerfile": "mail/Containerfile"}


@pytest.fixture(scope="module")
def composecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = tool("go", "/usr/local/go/bin/go")
    binary = tmp_path_factory.mktemp("composecheck") / "composecheck"
    # -mod=readonly: the committed go.mod and go.sum must be complete; nothing is written
    # into the repository, and the binary goes to a temporary directory.
    result = subprocess.run(
        [go, "build", "-mod=readonly", "-o", str(binary), "."],
        cwd=CONTAINERS / "composecheck",
        env={**_env(), "GOTOOLCHAIN": "local", "GOFLAGS": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return binary


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without any of the passwords, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if k not in PASSWORDS}
    return {**base, **extra}


def load(binary: Path, *files: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    result = subprocess.run(
        [str(binary), *args],
        env=env if env is not None else _env(**PASSWORDS),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def test_compose_yaml_loads_with_every_service_and_the_published_images(
    composecheck: Path,
) -> None:
    project = load(composecheck, "compose.yaml")
    services = project["services"]
    assert project["name"] == "faxbox"
    assert services["rabbitmq"]["image"].startswith("rabbitmq:4")
    assert services["mongodb"]["image"].startswith("mongo:8")
    assert {"prometheus", "grafana", "pstn-sim", "transmitter"} <= set(services)
    for svc in services.values():
        if "build" in svc:
            assert "BASE_IMAGE" not in svc["build"].get("args", {})  # the Dockerfile default
    mail = services["mail"]
    assert mail["build"] == MAIL_BUILD
    assert (ROOT / "deploy" / MAIL_BUILD["dockerfile"]).is_file()
    assert mail["image"] == "faxbox/mail-dev:0.1.0"
    # The intake mailbox the mail-poller logs in to is the fax realm's catch-all, and
    # the one password of the development server is the one compose asks for.
    env = mail["environment"]
    realm, _, intake = env["MAIL_CATCH_ALL"].partition("=")
    assert realm == "fax.faxbox.test"
    [mailbox] = json.loads(services["mail-poller"]["environment"]["FAXBOX_MAIL_POLLER_MAILBOXES"])
    assert (mailbox["host"], mailbox["username"]) == ("mail", intake)
    assert mailbox["password"] == env["MAIL_PASSWORD"] == PASSWORDS["FAXBOX_IMAP_PASSWORD"]
    assert services["notifier"]["environment"]["FAXBOX_NOTIFIER_SMTP_HOST"] == "mail"


def test_the_mail_routing_can_be_set_from_the_environment(composecheck: Path) -> None:
    routes = "fax.example.org=fax@example.org fax.example.net=fax@example.org"
    env = _env(**PASSWORDS, FAXBOX_MAIL_DOMAINS="example.org", FAXBOX_MAIL_CATCH_ALL=routes)
    mail = load(composecheck, "compose.yaml", env=env)["services"]["mail"]["environment"]
    assert mail["MAIL_LOCAL_DOMAINS"] == "example.org"
    assert mail["MAIL_CATCH_ALL"] == routes


def test_compose_refuses_to_load_without_the_passwords(composecheck: Path) -> None:
    result = subprocess.run(
        [str(composecheck), "-f", str(ROOT / "compose.yaml")],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "FAXBOX_" in result.stderr
    assert "PASSWORD" in result.stderr or "SECRET" in result.stderr


def test_the_override_merges_into_the_local_stack(composecheck: Path) -> None:
    project = load(composecheck, *FILES)
    services = project["services"]
    # The profile `observability` is off: no local images for Prometheus and Grafana.
    assert "prometheus" not in services
    assert "grafana" not in services
    alone = load(composecheck, "compose.yaml")["services"]
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert not svc.get("ports"), f"{name} publishes {svc.get('ports')}"
        if "build" not in svc:
            continue
        # What compose.yaml builds is built here too, from the same recipe, under the
        # same image name; only the base image differs.
        build, published = svc["build"], alone[name]["build"]
        assert build["args"] == {
            **published.get("args", {}),
            "BASE_IMAGE": "localhost/faxbox/debian:bookworm",
        }, name
        assert (build["context"], build["dockerfile"]) == (
            published["context"],
            published["dockerfile"],
        ), name
        assert svc["image"] == alone[name]["image"], name
        if name != "mail":
            assert build["args"]["SERVICE"] == name
            # compose.yaml's service-wide settings survive the merge.
            assert svc["init"] is True
            assert name == "pstn-sim" or {"rabbitmq", "mongodb"} <= set(svc["depends_on"])
            assert svc["healthcheck"]["test"][:2] == ["CMD", "python"], name
    assert "mail" in {name for name, svc in services.items() if "build" in svc}
    assert services["mongodb"]["image"].startswith("localhost/faxbox/ferretdb:")
    # !override replaced compose.yaml's mongosh probe rather than adding to it.
    assert "mongosh" not in json.dumps(services["mongodb"]["healthcheck"])
    assert services["transmitter"]["command"] == ["python", "-m", "faxbox.transmitter"]
    env = services["validator"]["environment"]
    assert env["FAXBOX_AMQP_URL"] == "amqp://faxbox:rabbit-pw@127.0.0.1:17672/"
    # The mail server runs as compose.yaml has it (routing, password, health check);
    # only where it listens changes.
    mail, published_mail = services["mail"], alone["mail"]
    assert mail["healthcheck"]["test"] == published_mail["healthcheck"]["test"]
    assert mail["environment"].items() >= published_mail["environment"].items()
    added = set(mail["environment"]) - set(published_mail["environment"])
    assert added == {"MAIL_LISTEN", "MAIL_IMAP_PORT", "MAIL_SMTP_PORT", "MAIL_LMTP_PORT"}


def _port(port: str | dict[str, Any]) -> str:
    """host_ip:published:target[/udp], from the short form or compose-go's long one."""
    if isinstance(port, str):
        return port
    protocol = "" if port.get("protocol", "tcp") == "tcp" else f"/{port['protocol']}"
    return f"{port['host_ip']}:{port['published']}:{port['target']}{protocol}"


def _volume(volume: str | dict[str, Any]) -> str:
    """source:target[:ro], bind sources as absolute paths."""
    if isinstance(volume, dict):
        mode = ":ro" if volume.get("read_only") else ""
        return f"{volume['source']}:{volume['target']}{mode}"
    if volume.startswith("./"):
        return str(ROOT / volume[2:])
    return volume


def _comparable(svc: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a container runs, as one shape from either loader."""
    build = svc.get("build") or {}
    secrets = build.get("secrets") or []
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(a.split("=", 1) for a in args)
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) for e in environment)
    return {
        "image": svc.get("image"),
        "build": {k: build.get(k) for k in ("context", "dockerfile", "labels")},
        "build_secrets": [s if isinstance(s, str) else s["source"] for s in secrets],
        "build_args": args,
        "network_mode": svc.get("network_mode"),
        "ports": sorted(_port(p) for p in svc.get("ports") or []),
        "volumes": sorted(_volume(v) for v in svc.get("volumes") or []),
        "command": svc.get("command"),
        "entrypoint": svc.get("entrypoint"),
        "environment": {k: str(v) for k, v in environment.items()},
        "healthcheck": (svc.get("healthcheck") or {}).get("test"),
        "depends_on": sorted(svc.get("depends_on") or []),
        "init": bool(svc.get("init")),
        "restart": svc.get("restart"),
    }


@pytest.mark.parametrize("files", [FILES[:1], FILES], ids=["compose.yaml", "with-local"])
def test_podman_compose_reads_the_files_as_compose_go_does(
    composecheck: Path, container_tools: dict[str, str], files: tuple[str, ...]
) -> None:
    reference = load(composecheck, *files)["services"]
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    result = subprocess.run(
        [str(ROOT / ".venv/bin/podman-compose"), *args, "config"],
        env=_env(**PASSWORDS),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ours = yaml.safe_load(result.stdout)["services"]
    assert set(ours) == set(reference)
    for name in reference:
        assert _comparable(ours[name]) == _comparable(reference[name]), name


@pytest.fixture(scope="module")
def kustomize() -> str:
    """The pinned kustomize, built from the Go module proxy on first use (no kubectl)."""
    tool("go", "/usr/local/go/bin/go")
    result = subprocess.run(
        ["bash", str(CONTAINERS / "kustomize.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        missing(f"deploy/containers/kustomize.sh failed:\n{result.stderr}")
    return result.stdout.strip()


def test_kustomize_builds_deploy_k8s(kustomize: str) -> None:
    result = subprocess.run(
        [kustomize, "build", str(ROOT / "deploy/k8s")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    services = sorted(
        p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file()
    )
    assert sorted(deployments) == services
    for name, deployment in deployments.items():
        assert deployment["metadata"]["namespace"] == "faxbox", name
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith(f"faxbox/{name}:"), container["image"]
