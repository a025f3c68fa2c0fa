"""Fixtures of the portal's integration tests: one seeded database per module and an
app on FastAPI's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from faxbox.portal.adapters import HttpHealthProbe, RabbitManagement
from faxbox.portal.app import create_app
from faxbox.portal.deps import PortalDeps
from faxbox.portal.security import SessionStore, TokenStore
from faxbox.shared.outbox import Outbox
from faxbox.shared.ports import Publisher
from faxbox.shared.routing import Topology
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore
from tests.integration.portal.seed import PASSWORD, World, build_world
from tests.support import RabbitServer


class NoRedrive:
    """For modules that never re-drive; the dashboard tests use the real Bus."""

    async def redrive(self, service: str, limit: int | None = None) -> int:
        raise AssertionError("not expected in this test")


def portal_outbox(store: Store, publisher: Publisher) -> Outbox:
    """The portal's outbox as the service wires it, on this module's database."""
    return Outbox(MongoDecisionStore(store.db, "portal"), publisher, name="portal")


@pytest.fixture(scope="module")
async def world(store: Store) -> World:
    return await build_world(store)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_deps(
    store: Store,
    tokens: TokenStore,
    http: httpx.AsyncClient,
    rabbit: RabbitServer | None = None,
    vhost: str = "/",
    **overrides: object,
) -> PortalDeps:
    values: dict[str, object] = {
        "store": store,
        "tokens": tokens,
        "sessions": SessionStore(store.db, 3600),
        "queues": RabbitManagement(
            http,
            rabbit.api_url if rabbit else "http://127.0.0.1:9",
            vhost,
            rabbit.user if rabbit else "guest",
            rabbit.password if rabbit else "guest",
        ),
        "probe": HttpHealthProbe(http),
        "redriver": NoRedrive(),
        "topology": Topology("faxbox"),
    }
    values |= overrides
    return PortalDeps(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def deps(store: Store, http: httpx.AsyncClient, world: World) -> PortalDeps:
    tokens = TokenStore(store.db)
    await tokens.ensure_indexes()
    return make_deps(store, tokens, http)


def client_for(deps: PortalDeps) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(deps)), base_url="http://portal.test"
    )


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the JSON API; sets the CSRF header on the client for later changes."""
    token = (await client.get("/api/session/csrf")).json()["csrf_token"]
    response = await client.post(
        "/api/session",
        json={"email": email, "password": password},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 200, response.text
    csrf: str = response.json()["csrf_token"]
    client.headers["X-CSRF-Token"] = csrf
    return csrf


@pytest.fixture
async def client(deps: PortalDeps) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(deps) as c:
        yield c
