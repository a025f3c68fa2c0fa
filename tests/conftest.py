"""Fixtures shared by every tier.

Integration tests talk to the real servers started by ``deploy/local/up``. When a
server is unreachable they skip on a developer's machine, but fail when
``FAXBOX_REQUIRE_SERVERS`` or ``CI`` is set: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo.uri_parser import parse_uri

from faxbox.shared.failover import split_urls
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from tests.support import ImapServer, RabbitServer, require_server

# --- RabbitMQ ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbit() -> RabbitServer:
    server = RabbitServer.from_env()
    parts = urllib.parse.urlsplit(split_urls(server.amqp_url)[0])
    require_server("RabbitMQ", parts.hostname or "127.0.0.1", parts.port or 5672)
    return server


@pytest.fixture(scope="module")
def vhost(rabbit: RabbitServer) -> Iterator[str]:
    """A fresh RabbitMQ vhost for one test module, deleted afterwards."""
    with rabbit.scratch_vhost("test") as name:
        yield name


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


# --- IMAP (Dovecot locally) ---------------------------------------------------------------


@pytest.fixture(scope="session")
def imap_server() -> ImapServer:
    host = os.environ.get("FAXBOX_IMAP_HOST", "127.0.0.1")
    port = int(os.environ.get("FAXBOX_IMAP_PORT", "1143"))
    require_server("Dovecot IMAP", host, port)
    users = os.environ.get("FAXBOX_IMAP_TEST_USERS", "fax@faxbox.test,fax2@faxbox.test")
    return ImapServer(
        host=host,
        port=port,
        users=tuple(users.split(",")),
        password=os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test"),
    )
