"""The wired service: runner lifecycle, uvicorn on a real port, real broker and database."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from faxbox.portal.service import Settings, bound_port, serve, service
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from tests.integration.portal.conftest import client_for, sign_in
from tests.integration.portal.seed import World

pytestmark = pytest.mark.integration


async def test_service_serves_the_portal_and_reports_ready(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, world: World
) -> None:
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        portal_port=0,
    )
    runtime = Runtime("portal")
    async with service(runtime, settings):
        runtime.ready = True
        healthy, checks = await runtime.health()
        assert healthy, checks
        assert set(checks) == {"broker", "database", "http"}
    # Stopped cleanly: a second start on port 0 works too.
    async with service(Runtime("portal"), settings):
        pass


async def test_uvicorn_serves_over_real_http(deps: object, world: World) -> None:
    from faxbox.portal.app import create_app

    app = create_app(deps)  # type: ignore[arg-type]
    async with serve(app, "127.0.0.1", 0) as server:
        port = bound_port(server)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            login = await client.get("/login")
            assert login.status_code == 200
            assert "Sign in" in login.text
            openapi = (await client.get("/openapi.json")).json()
            assert "/api/accounts/{account_id}/faxes" in openapi["paths"]
            await sign_in(client, world.a.users[0].email)
            assert (await client.get("/api/me")).status_code == 200
    await asyncio.sleep(0)


async def test_openapi_documents_bearer_usage(deps: object) -> None:
    async with client_for(deps) as client:  # type: ignore[arg-type]
        spec = (await client.get("/openapi.json")).json()
        assert "Bearer" in spec["info"]["description"]
        assert "/login" not in spec["paths"]  # pages are not API
