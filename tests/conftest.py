"""Fixtures shared by every tier.

Integration tests talk to the real servers started by ``deploy/local/up``. When a
server is unreachable they skip on a developer's machine, but fail when
``FAXBOX_REQUIRE_SERVERS`` or ``CI`` is set: CI must never pass by skipping.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from pymongo.uri_parser import parse_uri

from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store


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


# --- RabbitMQ ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RabbitServer:
    amqp_url: str
    api_url: str
    user: str
    password: str

    def api(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def url_for_vhost(self, vhost: str) -> str:
        parts = urllib.parse.urlsplit(self.amqp_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, "")))


@pytest.fixture(scope="session")
def rabbit() -> RabbitServer:
    amqp_url = os.environ.get("FAXBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    parts = urllib.parse.urlsplit(amqp_url)
    require_server("RabbitMQ", parts.hostname or "127.0.0.1", parts.port or 5672)
    api_url = os.environ.get("FAXBOX_RABBITMQ_API_URL", "http://127.0.0.1:15672")
    return RabbitServer(
        amqp_url=amqp_url,
        api_url=api_url.rstrip("/"),
        user=urllib.parse.unquote(parts.username or "guest"),
        password=urllib.parse.unquote(parts.password or "guest"),
    )


@pytest.fixture(scope="module")
def vhost(rabbit: RabbitServer) -> Iterator[str]:
    """A fresh RabbitMQ vhost for one test module, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    quoted = urllib.parse.quote(name, "")
    rabbit.api("PUT", f"/api/vhosts/{quoted}", {})
    rabbit.api(
        "PUT",
        f"/api/permissions/{quoted}/{urllib.parse.quote(rabbit.user, '')}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )
    yield name
    with contextlib.suppress(urllib.error.URLError):
        rabbit.api("DELETE", f"/api/vhosts/{quoted}")


@pytest.fixture
def broker_settings(rabbit: RabbitServer, vhost: str) -> BrokerSettings:
    """Settings for a unique prefix inside the module's vhost: tests don't see each other."""
    return BrokerSettings(
        amqp_url=rabbit.url_for_vhost(vhost),
        exchange_prefix=f"t{uuid.uuid4().hex[:8]}",
        retry_delays_s=(1, 2),
        max_transient_attempts=3,
        prefetch=4,
        publish_timeout_s=10,
        connect_timeout_s=10,
    )


# --- MongoDB (FerretDB locally) -----------------------------------------------------------


@pytest.fixture(scope="session")
def mongo_url() -> str:
    url = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
    host, port = parse_uri(url)["nodelist"][0]
    require_server("MongoDB (FerretDB)", host, port)
    return url


@pytest.fixture(scope="module")
def mongo_settings(mongo_url: str) -> MongoSettings:
    """A database of its own for each test module (FerretDB: [a-zA-Z0-9_-], ≤63 chars)."""
    return MongoSettings(mongo_url=mongo_url, mongo_db=f"test_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def store(mongo_settings: MongoSettings) -> AsyncIterator[Store]:
    """A connected store on the module's fresh database with its indexes; dropped after."""
    s = await Store.connect(mongo_settings)
    try:
        await s.ensure_indexes()
        yield s
    finally:
        await s.client.drop_database(mongo_settings.mongo_db)
        await s.close()
