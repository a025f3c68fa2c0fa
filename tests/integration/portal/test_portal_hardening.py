"""The portal's defences, over real HTTP (uvicorn on a loopback port) against the real
database: security headers, client addresses behind proxies and spoofed ones, server-side
sessions, scoped and expiring API tokens, password changes, who may change an account's
numbers and countries, and argon2 off the event loop."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from faxbox.portal.app import create_app
from faxbox.portal.clientaddr import TrustedProxies
from faxbox.portal.deps import PortalDeps
from faxbox.portal.service import bound_port, serve
from faxbox.portal.throttle import SignInLimits, SignInThrottle
from faxbox.shared import passwords
from faxbox.shared.store import Store
from faxbox.shared.store.models import utc_now
from tests.integration.portal.seed import PASSWORD, World

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def portal(deps: PortalDeps, **changes: Any) -> AsyncIterator[str]:
    """The app served by uvicorn on 127.0.0.1; yields its base URL."""
    async with serve(create_app(dataclasses.replace(deps, **changes)), "127.0.0.1", 0) as server:
        yield f"http://127.0.0.1:{bound_port(server)}"


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    token = (await client.get("/api/session/csrf")).json()["csrf_token"]
    response = await client.post(
        "/api/session",
        json={"email": email, "password": password},
        headers={"X-CSRF-Token": token, **headers},
    )
    if response.status_code == 200:
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return response


# --- headers ----------------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(deps: PortalDeps, world: World) -> None:
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as client:
        for path in ("/login", "/api/session/csrf", "/static/portal.css", "/nowhere"):
            headers = (await client.get(path)).headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
            assert "script-src" not in csp
            assert "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert "strict-transport-security" not in headers  # plain HTTP
        assert (await client.get("/login")).headers["cache-control"] == "no-store"
        # Swagger UI would need a CDN's script; the OpenAPI document stays.
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200
        # A client claiming TLS through X-Forwarded-Proto is not a proxy: no HSTS.
        spoofed = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "strict-transport-security" not in spoofed.headers
    proxies = TrustedProxies.parse(["127.0.0.1"])
    async with portal(deps, proxies=proxies) as url, httpx.AsyncClient(base_url=url) as client:
        behind_tls = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert behind_tls.headers["strict-transport-security"].startswith("max-age=31536000")


# --- client addresses -------------------------------------------------------------------


async def test_an_xff_spoof_from_a_non_proxy_does_not_escape_the_limit(
    deps: PortalDeps, world: World
) -> None:
    limits = SignInLimits(per_email_and_address=3, per_address=50, per_email=50)
    throttled = {"signin": SignInThrottle(deps.store.db, limits)}
    email = world.reseller.users[1].email
    # Only 10.0.0.0/8 is a proxy; the test connects from 127.0.0.1.
    proxies = TrustedProxies.parse(["10.0.0.0/8"])
    async with (
        portal(deps, proxies=proxies, **throttled) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for n in range(3):
            response = await sign_in(client, email, "wrong", **{"X-Forwarded-For": f"198.18.1.{n}"})
            assert response.status_code == 401
        locked = await sign_in(client, email, PASSWORD, **{"X-Forwarded-For": "198.18.1.99"})
        assert locked.status_code == 429
    # Served behind a trusted proxy (127.0.0.1), each forwarded client counts apart.
    async with (
        portal(deps, proxies=TrustedProxies.parse(["127.0.0.1/32"]), **throttled) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        fresh = await sign_in(client, email, PASSWORD, **{"X-Forwarded-For": "198.18.2.1"})
        assert fresh.status_code == 200


# --- sessions ---------------------------------------------------------------------------


async def test_sign_out_ends_the_session_on_the_server(deps: PortalDeps, world: World) -> None:
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await sign_in(client, world.a.users[0].email)).status_code == 200
        stolen = client.cookies["faxbox_session"]
        assert (await client.delete("/api/session")).status_code == 204
        async with httpx.AsyncClient(base_url=url, cookies={"faxbox_session": stolen}) as thief:
            assert (await thief.get("/api/me")).status_code == 401


async def test_sign_out_everywhere_ends_every_session(deps: PortalDeps, world: World) -> None:
    email = world.a.users[1].email
    async with (
        portal(deps) as url,
        httpx.AsyncClient(base_url=url) as laptop,
        httpx.AsyncClient(base_url=url) as phone,
    ):
        await sign_in(laptop, email)
        await sign_in(phone, email)
        form = {"csrf_token": laptop.headers["X-CSRF-Token"], "everywhere": "yes"}
        assert (await laptop.post("/logout", data=form)).status_code == 303
        assert (await phone.get("/api/me")).status_code == 401
        assert (await laptop.get("/api/me")).status_code == 401
    assert await deps.sessions.collection.count_documents({"user_id": world.a.users[1].id}) == 0


async def test_a_password_change_ends_other_sessions_and_every_token(
    deps: PortalDeps, store: Store, world: World
) -> None:
    user = world.b.users[0]
    async with (
        portal(deps) as url,
        httpx.AsyncClient(base_url=url) as here,
        httpx.AsyncClient(base_url=url) as elsewhere,
    ):
        await sign_in(here, user.email)
        await sign_in(elsewhere, user.email)
        made = await here.post("/api/tokens", json={"name": "cron", "scope": "admin"})
        bearer = {"Authorization": f"Bearer {made.json()['token']}"}
        assert (await here.get("/api/me", headers=bearer)).status_code == 200
        wrong = await here.post(
            "/api/me/password", json={"current_password": "nope", "new_password": "x" * 12}
        )
        assert wrong.status_code == 422
        changed = await here.post(
            "/api/me/password",
            json={"current_password": PASSWORD, "new_password": "another good passphrase"},
        )
        assert changed.status_code == 200, changed.text
        here.headers["X-CSRF-Token"] = changed.json()["csrf_token"]
        assert (await here.get("/api/me")).status_code == 200  # this browser goes on
        assert (await elsewhere.get("/api/me")).status_code == 401
        async with httpx.AsyncClient(base_url=url) as script:
            assert (await script.get("/api/me", headers=bearer)).status_code == 401
        assert await store.db["api_tokens"].count_documents({"user_id": user.id}) == 0
    await store.set_password_hash(user.id, passwords.hash_password(PASSWORD))


async def test_a_password_set_by_the_cli_revokes_tokens(
    deps: PortalDeps, store: Store, world: World
) -> None:
    user = world.reseller.users[0]
    token, secret = await deps.tokens.create(user, "export")
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as script:
        bearer = {"Authorization": f"Bearer {secret}"}
        assert (await script.get("/api/me", headers=bearer)).status_code == 200
        # What `faxbox user set-password` does: a new hash in the users collection.
        await store.set_password_hash(user.id, passwords.hash_password("set by the operator"))
        assert (await script.get("/api/me", headers=bearer)).status_code == 401
    assert await store.db["api_tokens"].find_one({"_id": token.id}) is None
    await store.set_password_hash(user.id, passwords.hash_password(PASSWORD))


# --- API tokens -------------------------------------------------------------------------


async def test_a_read_token_only_reads_and_every_token_expires(
    deps: PortalDeps, store: Store, world: World
) -> None:
    admin = world.a.admin
    url_of_user = f"/api/accounts/{admin.account_id}/users/{world.a.users[0].id}"
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as client:
        await sign_in(client, admin.email)
        read = (await client.post("/api/tokens", json={"name": "report"})).json()
        assert read["scope"] == "read"  # the default
        write = (await client.post("/api/tokens", json={"scope": "admin"})).json()
        for days in (0, 366):
            too = await client.post("/api/tokens", json={"expires_in_days": days})
            assert too.status_code == 422
        async with httpx.AsyncClient(base_url=url) as script:
            reader = {"Authorization": f"Bearer {read['token']}"}
            writer = {"Authorization": f"Bearer {write['token']}"}
            assert (await script.get(url_of_user, headers=reader)).status_code == 200
            change = {"header_name": "Changed by a script"}
            refused = await script.patch(f"{url_of_user}/faxbox", json=change, headers=reader)
            assert refused.status_code == 403
            assert "scope" in refused.json()["detail"]
            done = await script.patch(f"{url_of_user}/faxbox", json=change, headers=writer)
            assert done.status_code == 200
            # Past its expiry a token is refused, and forgotten.
            await store.db["api_tokens"].update_one(
                {"_id": write["id"]},
                {"$set": {"expires_at": utc_now() - timedelta(seconds=1)}},
            )
            assert (await script.get("/api/me", headers=writer)).status_code == 401
        assert await store.db["api_tokens"].find_one({"_id": write["id"]}) is None


# --- accounts: numbers and countries ----------------------------------------------------


async def test_resellers_manage_their_customers_numbers_and_countries(
    deps: PortalDeps, world: World
) -> None:
    a, b = world.a.account.id, world.b.account.id
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as client:
        await sign_in(client, world.a.admin.email)
        assert (
            await client.post(f"/api/accounts/{a}/numbers", json={"number": "+13055550100"})
        ).status_code == 403
        assert (
            await client.patch(f"/api/accounts/{a}", json={"allowed_countries": ["*"]})
        ).status_code == 403
        assert (await client.get(f"/api/accounts/{a}/numbers")).status_code == 200

        await sign_in(client, world.reseller.admin.email)
        accounts = {x["id"] for x in (await client.get("/api/accounts")).json()}
        assert accounts == {world.reseller.account.id, a}
        added = await client.post(f"/api/accounts/{a}/numbers", json={"number": "3055550100"})
        assert added.status_code == 201
        assert added.json()["number"] == "+13055550100"
        taken = await client.post(f"/api/accounts/{a}/numbers", json={"number": "+12125550121"})
        assert taken.status_code == 409  # B holds it
        assert "another account" in taken.json()["detail"]
        in_use = await client.delete(f"/api/accounts/{a}/numbers/+12125550111")
        assert in_use.status_code == 409
        assert (await client.delete(f"/api/accounts/{a}/numbers/+13055550100")).status_code == 204
        assert (
            await client.patch(f"/api/accounts/{b}", json={"allowed_countries": ["*"]})
        ).status_code == 404  # not its customer
        help_url = f"/api/accounts/{a}/show-help"
        before = (await client.get(help_url, params={"number": "+442079460958"})).json()
        assert before["refusal_code"] == "country_not_allowed"
        assert "reseller" in before["refusal"]
        widened = await client.patch(
            f"/api/accounts/{a}", json={"allowed_countries": ["US", "CA", "gb"]}
        )
        assert widened.json()["allowed_countries"] == ["US", "CA", "GB"]
        after = (await client.get(help_url, params={"number": "+442079460958"})).json()
        assert after["to"] == "+442079460958@acme.portal.test"
        bad = await client.patch(f"/api/accounts/{a}", json={"allowed_countries": ["UK"]})
        assert bad.status_code == 422

        await sign_in(client, world.platform.email)
        everyone = {x["id"] for x in (await client.get("/api/accounts")).json()}
        assert {world.reseller.account.id, a, b} <= everyone
        restored = await client.patch(f"/api/accounts/{a}", json={"allowed_countries": []})
        assert "GB" not in restored.json()["allowed_countries"]  # back to the home default


# --- argon2 off the loop ----------------------------------------------------------------


async def test_password_checks_run_off_the_event_loop(
    deps: PortalDeps, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real = passwords.verify_password

    def spy(password_hash: str | None, password: str) -> bool:
        threads.append(threading.get_ident())
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", spy)
    async with portal(deps) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await sign_in(client, world.a.users[0].email)).status_code == 200
    assert threads
    assert threading.get_ident() not in threads
