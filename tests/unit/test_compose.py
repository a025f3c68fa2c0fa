"""Static checks of the deployment artifacts: compose.yaml, compose.local.yaml,
deploy/Dockerfile, deploy/prometheus, deploy/grafana and deploy/k8s.

Every check here reads files. What they catch is drift — a new service without a
container, a port published beyond loopback, a password with a default, a dashboard
panel on a metric nobody exports, an autoscaler watching a queue the services do not
declare. tests/containers loads the same files with the real loaders (compose-go,
kustomize) and builds and runs the stack under podman.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from faxbox.shared.routing import SUBSCRIPTIONS, Topology
from tests.support import load_compose_file

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "deploy/Dockerfile"
HEALTH_PORT = 9100

# Every directory under services/ is a service (a workspace member with its package).
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())

# What the RabbitMQ Prometheus plugin exports (per-object endpoint) and the dashboard uses;
# everything else the dashboard names must be exported by our own code.
RABBITMQ_METRICS = {
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
}
# Environment variable names whose value is a credential.
SECRET_NAME = re.compile(r"PASS|PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
REQUIRED_VAR = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}")
# A `${NAME:-default}` or `${NAME-default}` whose NAME looks like a credential.
DEFAULTED_SECRET = re.compile(r"\$\{([A-Z0-9_]*(?:PASS|SECRET|TOKEN)[A-Z0-9_]*):?-")
URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^/@\s:]+):([^@\s]+)@")
JSON_PASSWORD = re.compile(r'"(?:password|secret|token)"\s*:\s*"([^"]*)"', re.IGNORECASE)


def _compose(name: str = "compose.yaml") -> dict[str, Any]:
    return load_compose_file(ROOT / name)


def _compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _built(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Compose services built from our Dockerfile (the Faxbox services), by name."""
    return {
        name: svc
        for name, svc in services.items()
        if (svc.get("build") or {}).get("dockerfile") == DOCKERFILE
    }


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_documents() if d.get("kind") == kind}


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree with its dotted path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _exported_metrics() -> set[str]:
    """Names our code exports, as Prometheus sees them (counter _total, histogram _bucket…)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
    names: set[str] = set()
    sources = [ROOT / "shared/src", ROOT / "fax/src", *(ROOT / "services").glob("*/src")]
    for source in sources:
        for path in source.rglob("*.py"):
            for kind, name in pattern.findall(path.read_text()):
                if kind == "Counter":
                    base = name.removesuffix("_total")
                    names |= {f"{base}_total", f"{base}_created"}
                elif kind in ("Histogram", "Summary"):
                    names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                else:
                    names.add(name)
    return names


# --- compose: services, build arguments, images ----------------------------------------


def test_services_directory_is_not_empty() -> None:
    assert len(SERVICES) >= 8, SERVICES


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_built_from_the_one_dockerfile(name: str) -> None:
    services = _compose_services()
    assert name in services, f"compose.yaml has no service {name!r} for services/{name}/"
    build = services[name].get("build")
    assert isinstance(build, dict), f"{name}: build must be a mapping with args"
    assert build.get("context", ".") == "."
    assert build.get("dockerfile") == DOCKERFILE
    assert build.get("args") == {"SERVICE": name}


def test_every_build_argument_names_a_service_directory_and_locked_distribution() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"] for p in lock["package"]}
    for name, svc in _built(_compose_services()).items():
        service = svc["build"]["args"]["SERVICE"]
        member = ROOT / "services" / service
        assert member.is_dir(), f"{name}: SERVICE={service} is not a directory under services/"
        project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
        # The Dockerfile installs faxbox-$SERVICE and runs faxbox.<SERVICE with _>.
        assert project["name"] == f"faxbox-{service}"
        assert f"faxbox-{service}" in locked, f"faxbox-{service} is not in uv.lock"
        package = service.replace("-", "_")
        assert (member / "src/faxbox" / package).is_dir(), f"no faxbox.{package} in {member}"


def test_images_are_pinned() -> None:
    for name, svc in _compose_services().items():
        image = svc.get("image")
        assert image, f"{name}: no image (a built service is tagged too)"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses latest"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} names no version"
        if name in _built(_compose_services()):
            service = svc["build"]["args"]["SERVICE"]
            version = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())[
                "project"
            ]["version"]
            assert image == f"faxbox/{service}:{version}"


def test_the_infrastructure_and_observability_are_there() -> None:
    services = _compose_services()
    for name in ("rabbitmq", "mongodb", "mail", "prometheus", "grafana"):
        assert name in services
    assert services["rabbitmq"]["image"].startswith("rabbitmq:4")
    assert "management" in services["rabbitmq"]["image"]
    assert "rabbitmq_prometheus" in services["rabbitmq"]["command"]
    assert services["mongodb"]["image"].startswith("mongo:8")


MAIL_CONTAINERFILE = "deploy/mail/Containerfile"


def test_the_mail_server_is_built_here_on_official_debian() -> None:
    mail = _compose_services()["mail"]
    build = mail["build"]
    context = ROOT / build["context"]
    assert context / build["dockerfile"] == ROOT / MAIL_CONTAINERFILE
    assert mail["image"].startswith("faxbox/mail-dev:")
    text = (ROOT / MAIL_CONTAINERFILE).read_text()
    # The official image by default; deploy/containers/build passes its local one.
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (context / source).is_file(), f"{MAIL_CONTAINERFILE}: no {source} in {context}"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user, "the mail server's Containerfile must name its USER"
    assert user[-1] not in ("root", "0"), "the mail server must not run as root"
    assert "DEVELOPMENT ONLY" in text


def test_the_fax_realm_goes_to_the_mailbox_the_mail_poller_reads() -> None:
    services = _compose_services()
    env = _environment(services["mail"])
    routes = re.fullmatch(r"\$\{FAXBOX_MAIL_CATCH_ALL:-(.+)\}", env["MAIL_CATCH_ALL"])
    assert routes, env["MAIL_CATCH_ALL"]
    intakes = {route.partition("=")[2] for route in routes[1].split()}
    [mailbox] = json.loads(_environment(services["mail-poller"])["FAXBOX_MAIL_POLLER_MAILBOXES"])
    assert intakes == {mailbox["username"]}
    assert mailbox["host"] == "mail"
    # The image's own ports (compose.yaml does not move them).
    text = (ROOT / MAIL_CONTAINERFILE).read_text()
    imap, smtp = (int(re.findall(rf"MAIL_{key}_PORT=(\d+)", text)[0]) for key in ("IMAP", "SMTP"))
    assert mailbox["port"] == imap
    notifier = _environment(services["notifier"])
    assert (notifier["FAXBOX_NOTIFIER_SMTP_HOST"], notifier["FAXBOX_NOTIFIER_SMTP_PORT"]) == (
        "mail",
        str(smtp),
    )
    # Every mailbox and SMTP login of the development server takes the one password.
    assert (
        env["MAIL_PASSWORD"]
        == mailbox["password"]
        == "${FAXBOX_IMAP_PASSWORD:?set FAXBOX_IMAP_PASSWORD}"
    )


# --- compose: ports, health, dependencies, credentials ---------------------------------


def _published(port: Any) -> tuple[str, str, str]:
    """(host ip, host port, protocol) of a short-syntax or long-syntax port."""
    if isinstance(port, dict):
        return (str(port.get("host_ip", "")), str(port["published"]), port.get("protocol", "tcp"))
    spec, _, protocol = str(port).partition("/")
    parts = spec.split(":")
    assert len(parts) == 3, f"port {port!r} must be host_ip:host_port:container_port"
    return parts[0], parts[1], protocol or "tcp"


def test_host_ports_are_loopback_only_and_unique() -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, svc in _compose_services().items():
        for port in svc.get("ports", []):
            ip, host_port, protocol = _published(port)
            assert ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
            key = (host_port, protocol)
            assert key not in seen, f"{name} and {seen[key]} both publish {host_port}/{protocol}"
            seen[key] = name


def test_sip_is_published_over_udp() -> None:
    services = _compose_services()
    for name in ("inbound", "pstn-sim"):
        protocols = {_published(p)[2] for p in services[name].get("ports", [])}
        assert "udp" in protocols, f"{name} publishes no UDP port for SIP"


def test_every_service_has_a_health_check() -> None:
    for name, svc in _compose_services().items():
        check = svc.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        assert check.get("test"), f"{name}: healthcheck without a test"
    for name, svc in _built(_compose_services()).items():
        # The image's own probe: /readyz on FAXBOX_HTTP_PORT, which each service sets.
        probe = " ".join(svc["healthcheck"]["test"])
        assert "/readyz" in probe, name
        assert "FAXBOX_HTTP_PORT" in probe, name
        assert _environment(svc)["FAXBOX_HTTP_PORT"] == str(HEALTH_PORT), name


def test_dependencies_wait_for_health() -> None:
    services = _compose_services()
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {target}"
    for name, svc in _built(services).items():
        if name == "pstn-sim":  # the simulator uses neither broker nor database
            continue
        assert {"rabbitmq", "mongodb"} <= set(svc["depends_on"]), name


def test_no_literal_or_defaulted_credentials() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert not DEFAULTED_SECRET.search(text), DEFAULTED_SECRET.findall(text)
    for name, svc in _compose_services().items():
        for key, value in _environment(svc).items():
            if SECRET_NAME.search(key) and not key.endswith(("_USER", "_USERNAME")):
                assert REQUIRED_VAR.fullmatch(value), f"{name}: {key} must be ${{VAR:?…}}"
        for where, value in _strings(svc, name):
            for _user, password in URL_USERINFO.findall(value):
                assert REQUIRED_VAR.fullmatch(password), f"{where}: password in URL {value!r}"
            for password in JSON_PASSWORD.findall(value):
                assert REQUIRED_VAR.fullmatch(password), f"{where}: password in JSON {value!r}"


def test_mounted_configuration_exists() -> None:
    for name, svc in _compose_services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_services_reach_each_other_by_compose_names() -> None:
    services = _compose_services()
    env = _environment(services["validator"])
    assert "@rabbitmq:5672" in env["FAXBOX_AMQP_URL"]
    assert "@mongodb:27017" in env["FAXBOX_MONGO_URL"]
    assert env["FAXBOX_HTTP_HOST"] == "0.0.0.0"
    assert env["FAXBOX_HTTP_PORT"] == str(HEALTH_PORT)
    mailboxes = json.loads(_environment(services["mail-poller"])["FAXBOX_MAIL_POLLER_MAILBOXES"])
    assert mailboxes[0]["host"] == "mail"
    urls = json.loads(_environment(services["portal"])["FAXBOX_PORTAL_SERVICE_HEALTH_URLS"])
    assert set(urls) == set(SERVICES) - {"portal"}


def _settings_variables(service: str) -> set[str] | None:
    """The FAXBOX_* variables a service reads, from its Settings classes; None while the
    service has no settings module yet (it is still being written)."""
    package = service.replace("-", "_")
    classes: list[type[BaseSettings]] = []
    for module_name in ("service", "settings"):
        try:
            module = importlib.import_module(f"faxbox.{package}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"faxbox.{package}.{module_name}":
                raise
            continue
        classes += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseSettings) and c.__module__.startswith("faxbox.")
        ]
    if not classes:
        return None
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
        # FAXBOX_<SERVICE>_<SHARED>: a shared setting for this service alone.
        own = str(getattr(cls, "service_prefix", ""))
        names |= {f"{prefix}{own}{field}".upper() for field in cls.model_fields if own}
    return names


# Set by the image (deploy/Dockerfile) for its CMD, not read by a Settings class.
IMAGE_VARIABLES = {"FAXBOX_SERVICE"}


@pytest.mark.parametrize("name", SERVICES)
def test_compose_sets_only_variables_the_service_reads(name: str) -> None:
    known = _settings_variables(name)
    if known is None:
        pytest.skip(f"services/{name} has no settings yet")
    svc = _compose_services()[name]
    given = {k for k in _environment(svc) if k.startswith("FAXBOX_")}
    given |= set(re.findall(r"export (FAXBOX_[A-Z0-9_]+)=", " ".join(svc.get("command", []))))
    unknown = given - known - IMAGE_VARIABLES
    assert not unknown, f"{name} has no setting for {sorted(unknown)}"


@pytest.mark.parametrize("name", SERVICES)
def test_kubernetes_sets_only_variables_the_service_reads(name: str) -> None:
    known = _settings_variables(name)
    if known is None:
        pytest.skip(f"services/{name} has no settings yet")
    [container] = _k8s("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    given = {e["name"] for e in container.get("env", [])}
    unknown = given - known - IMAGE_VARIABLES
    assert not unknown, f"{name} has no setting for {sorted(unknown)}"


def test_the_shared_config_map_is_read_by_some_service() -> None:
    known: set[str] = set()
    for name in SERVICES:
        known |= _settings_variables(name) or set()
    data = set(_k8s("ConfigMap")["faxbox-config"]["data"])
    assert data <= known, sorted(data - known)


# --- compose.local.yaml: the podman stack on the host's network ------------------------

LOCAL = "compose.local.yaml"
LOCAL_PORTS = range(17000, 18000)
# Ports a service connects to rather than listens on.
CLIENT_PORT_VARIABLES = {"FAXBOX_NOTIFIER_SMTP_PORT"}
LOOPBACK_REFERENCE = re.compile(r"127\.0\.0\.1[:/](\d+)")


def _local_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose(LOCAL)["services"]
    return services


def _started_local_services() -> dict[str, dict[str, Any]]:
    """What `deploy/containers/up` starts: services in no profile."""
    return {n: s for n, s in _local_services().items() if not s.get("profiles")}


def _development_server_ports() -> set[int]:
    """Ports of deploy/local/up's servers (deploy/local/lib.sh), and epmd's."""
    text = (ROOT / "deploy/local/lib.sh").read_text()
    defaults = re.findall(r"^[A-Z_]+_PORT=(?:\"\$\{[A-Z_]+:-)?(\d+)", text, re.M)
    assert len(defaults) >= 6, defaults
    return {int(p) for p in defaults} | {4369}


def _listening_ports(name: str, env: dict[str, str]) -> set[int]:
    ports: set[int] = set()
    for key, value in env.items():
        if key.endswith("_PORT") and key not in CLIENT_PORT_VARIABLES:
            ports.add(int(value))
        elif key.endswith("_ADDR"):
            ports.add(int(value.rpartition(":")[2]))
    return ports


def test_local_override_runs_every_service_on_the_host_network_or_leaves_it_out() -> None:
    local = _local_services()
    assert set(local) == set(_compose_services())
    for name, svc in local.items():
        if svc.get("profiles"):
            assert name in {"prometheus", "grafana"}, f"{name} would not be started"
        else:
            assert svc.get("network_mode") == "host", name
    for name in _built(_compose_services()):
        assert local[name]["build"]["args"]["BASE_IMAGE"] == "localhost/faxbox/debian:bookworm"
    for name in ("rabbitmq", "mongodb"):
        assert local[name]["image"].startswith("localhost/faxbox/"), name
    # The mail server is compose.yaml's own build, on the local base.
    assert "image" not in local["mail"]
    assert local["mail"]["build"]["args"] == {"BASE_IMAGE": "localhost/faxbox/debian:bookworm"}
    assert not {"context", "dockerfile"} & set(local["mail"]["build"])


def test_local_override_publishes_nothing_and_binds_loopback_only() -> None:
    assert "0.0.0.0" not in (ROOT / LOCAL).read_text()
    compose = _compose_services()
    for name, svc in _local_services().items():
        if compose[name].get("ports"):
            # `ports: !reset []` (read as None here): host networking publishes nothing.
            assert "ports" in svc, f"{name}: ports not reset"
            assert svc["ports"] is None, f"{name}: ports not reset"
        for key, value in _environment(svc).items():
            if key.endswith(("_HOST", "_LISTEN", "_IP_ADDRESS")):
                assert value == "127.0.0.1", f"{name}: {key}={value}"


def test_local_ports_are_unique_and_clear_of_the_development_servers() -> None:
    owner: dict[int, str] = {}
    for name, svc in _local_services().items():
        for port in _listening_ports(name, _environment(svc)):
            assert port in LOCAL_PORTS, f"{name}: port {port} outside {LOCAL_PORTS}"
            assert port not in owner, f"{name} and {owner.get(port)} both listen on {port}"
            owner[port] = name
    assert not set(owner) & _development_server_ports()
    # Every loopback address a service is given is one some service listens on.
    for name, svc in _local_services().items():
        for where, value in _strings(svc, name):
            for port in LOOPBACK_REFERENCE.findall(value):
                assert int(port) in owner, f"{where}: nothing listens on {port}"
        env = _environment(svc)
        for key in CLIENT_PORT_VARIABLES & set(env):
            assert int(env[key]) in owner, f"{name}: {key}={env[key]} is nobody's port"
        for mailbox in json.loads(env.get("FAXBOX_MAIL_POLLER_MAILBOXES", "[]")):
            assert mailbox["port"] in owner, f"{name}: mailbox port {mailbox['port']}"


def test_local_services_have_a_health_port_each() -> None:
    for name in _built(_compose_services()):
        env = _environment(_local_services()[name])
        assert int(env["FAXBOX_HTTP_PORT"]) in LOCAL_PORTS, name
        assert env["FAXBOX_HTTP_HOST"] == "127.0.0.1", name
    health = json.loads(
        _environment(_local_services()["portal"])["FAXBOX_PORTAL_SERVICE_HEALTH_URLS"]
    )
    for name, url in health.items():
        port = _environment(_local_services()[name])["FAXBOX_HTTP_PORT"]
        assert url == f"http://127.0.0.1:{port}/readyz", name


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_installs_one_service_as_non_root() -> None:
    text = (ROOT / DOCKERFILE).read_text()
    # The published base by default; deploy/containers/build passes its local one.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^ARG SERVICE\b", text, re.M)
    assert re.search(r"pip install --no-cache-dir .*uv==\d", text)
    assert re.search(r"uv sync --frozen --no-dev .*--package \"?faxbox-\$SERVICE", text)
    assert "UV_PYTHON_DOWNLOADS=never" in text
    assert "libspandsp2" in text
    assert "libtiff6" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user, "the image must name its USER"
    assert not user[-1].startswith(("root", "0")), "the image must not run as root"
    assert re.search(r"^HEALTHCHECK .*/readyz", text, re.M | re.S)
    assert "python -m" in text
    assert "tr - _" in text
    # The whole context, so a new workspace member needs no change here.
    assert re.search(r"^COPY \. \.$", text, re.M)


def _dockerignore() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_dockerignore_keeps_local_state_out() -> None:
    assert {"var", ".venv", "test-artifacts", "**/__pycache__", "tests"} <= _dockerignore()


def test_dockerignore_keeps_every_workspace_member_in() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = [p for glob in root["tool"]["uv"]["workspace"]["members"] for p in ROOT.glob(glob)]
    assert len(members) >= len(SERVICES) + 2
    tops = {p.relative_to(ROOT).parts[0] for p in members} | {"pyproject.toml", "uv.lock"}
    ignored = {pattern.rstrip("/") for pattern in _dockerignore()}
    assert not tops & ignored, f".dockerignore leaves out {sorted(tops & ignored)}"


# --- Prometheus and Grafana --------------------------------------------------------------


def test_prometheus_scrapes_rabbitmq_and_every_service() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{n}:{dns['port']}" for n in dns["names"]}
    assert "rabbitmq:15692" in targets
    compose = _compose_services()
    for name in SERVICES:
        assert f"{name}:{HEALTH_PORT}" in targets, f"Prometheus does not scrape {name}"
        assert name in compose


def test_alerts_are_loaded_and_name_only_metrics_that_exist() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    mounts = _compose_services()["prometheus"]["volumes"]
    for path in config["rule_files"]:
        assert f"./deploy/prometheus/{Path(path).name}:{path}:ro" in mounts
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    # An outage waited out is the one thing only a metric tells (it is never a dead letter).
    assert "faxbox_waiting_on_infrastructure" in alerts["FaxboxWaitingOnInfrastructure"]["expr"]
    exported = _exported_metrics()
    for name, rule in alerts.items():
        used = set(re.findall(r"\b((?:faxbox|rabbitmq)_[a-z0-9_]+)", rule["expr"]))
        unknown = {m for m in used if m not in exported and m not in RABBITMQ_METRICS}
        assert not unknown, f"{name} names metrics nobody exports: {sorted(unknown)}"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "deploy/grafana/dashboards/faxbox.json").read_text())
    return data


def _expressions() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_uses_only_metrics_that_exist() -> None:
    exported = _exported_metrics()
    assert "faxbox_messages_consumed_total" in exported  # the scan itself works
    used: set[str] = set()
    for expr in _expressions():
        used |= set(re.findall(r"\b((?:faxbox|rabbitmq)_[a-z0-9_]+)", expr))
    assert used
    unknown = {m for m in used if m not in exported and m not in RABBITMQ_METRICS}
    assert not unknown, f"dashboard names metrics nobody exports: {sorted(unknown)}"


def test_dashboard_covers_what_operators_watch() -> None:
    exprs = "\n".join(_expressions())
    titles = {p["title"] for p in _dashboard()["panels"]}
    for needed in (
        "rabbitmq_queue_messages_ready",  # queue depths
        "faxbox_messages_consumed_total",  # rates
        "faxbox_transmitter_outcomes_total",  # sent / failed
        "faxbox_inbound_outcomes_total",  # received
        "faxbox_transmitter_pages_sent_total",  # pages
        "faxbox_mail_poller_intake_latency_seconds_bucket",  # intake latency
        "faxbox_transmitter_calls_in_progress",  # calls in progress
    ):
        assert needed in exprs, needed
    assert ".dlq" in exprs
    assert "Dead letters" in titles


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    base = ROOT / "deploy/grafana/provisioning"
    datasources = yaml.safe_load((base / "datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in _dashboard()["panels"]:
        if "datasource" in panel:
            assert panel["datasource"]["uid"] in uids, panel["title"]
    providers = yaml.safe_load((base / "dashboards/faxbox.yaml").read_text())["providers"]
    mounts = _compose_services()["grafana"]["volumes"]
    path = providers[0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts


# --- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_deployment_with_probes_and_resources(name: str) -> None:
    deployment = _k8s("Deployment").get(name)
    assert deployment, f"deploy/k8s has no Deployment {name}"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(f"faxbox/{name}:")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == HEALTH_PORT
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    credentials = ("FAXBOX_AMQP_URL", "FAXBOX_MONGO_URL")
    for env in container.get("env", []):
        if SECRET_NAME.search(env["name"]) or env["name"] in credentials:
            assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {env['name']}"


def test_every_queue_worker_scales_on_its_own_queue() -> None:
    deployments = _k8s("Deployment")
    scaled = _k8s("ScaledObject")
    assert set(scaled) == set(SUBSCRIPTIONS), "one ScaledObject per consuming service"
    topology = Topology()
    for name, obj in scaled.items():
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"ScaledObject {name} targets unknown {target}"
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == topology.queue(target)
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in _k8s("TriggerAuthentication")


def test_mail_poller_runs_an_active_and_a_standby() -> None:
    assert _k8s("Deployment")["mail-poller"]["spec"]["replicas"] == 2
    assert "mail-poller" not in _k8s("ScaledObject")


def test_services_exist_for_what_is_called() -> None:
    services = _k8s("Service")
    assert {"portal", "inbound", "pstn-sim"} <= set(services)
    for name in ("inbound", "pstn-sim"):
        assert {p["protocol"] for p in services[name]["spec"]["ports"]} == {"UDP"}


def test_kustomization_lists_every_manifest() -> None:
    base = ROOT / "deploy/k8s"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
