"""Sign-in, sessions, CSRF and API tokens against the real database."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest

from faxbox.portal.deps import PortalDeps
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from tests.integration.portal.conftest import client_for, sign_in
from tests.integration.portal.seed import PASSWORD, World

pytestmark = pytest.mark.integration


async def test_sign_in_sets_a_signed_httponly_lax_cookie(
    client: httpx.AsyncClient, world: World
) -> None:
    token = (await client.get("/api/session/csrf")).json()["csrf_token"]
    response = await client.post(
        "/api/session",
        json={"email": world.a.users[0].email.upper(), "password": PASSWORD},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 200
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "faxbox_session" in v
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    me = (await client.get("/api/me")).json()
    assert me["user"]["id"] == world.a.users[0].id
    assert "password_hash" not in me["user"]


@pytest.mark.parametrize(
    ("email", "password"),
    [("alice@acme.portal.test", "wrong password"), ("nobody@acme.portal.test", PASSWORD)],
)
async def test_wrong_credentials_are_refused(
    client: httpx.AsyncClient, world: World, email: str, password: str
) -> None:
    token = (await client.get("/api/session/csrf")).json()["csrf_token"]
    response = await client.post(
        "/api/session",
        json={"email": email, "password": password},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 401
    assert (await client.get("/api/me")).status_code == 401


async def test_sign_in_without_the_double_submit_token_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    await client.get("/api/session/csrf")
    response = await client.post(
        "/api/session", json={"email": world.a.users[0].email, "password": PASSWORD}
    )
    assert response.status_code == 403
    response = await client.post(
        "/api/session",
        json={"email": world.a.users[0].email, "password": PASSWORD},
        headers={"X-CSRF-Token": "forged-token-forged-token-forged-token"},
    )
    assert response.status_code == 403


async def test_changes_need_the_session_csrf_token(client: httpx.AsyncClient, world: World) -> None:
    csrf = await sign_in(client, world.a.users[0].email)
    del client.headers["X-CSRF-Token"]
    assert (await client.post("/api/tokens", json={"name": "x"})).status_code == 403
    wrong = {"X-CSRF-Token": "not-the-token"}
    assert (await client.post("/api/tokens", json={"name": "x"}, headers=wrong)).status_code == 403
    ok = await client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    # A form post carries it as a field.
    response = await client.post("/logout", data={"csrf_token": "nope"})
    assert response.status_code == 403
    response = await client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303


async def test_api_tokens_work_without_cookies_and_can_be_revoked(
    client: httpx.AsyncClient, deps: PortalDeps, world: World
) -> None:
    user = world.a.users[0]
    await sign_in(client, user.email)
    created = await client.post("/api/tokens", json={"name": "nightly export", "scope": "admin"})
    assert created.status_code == 201
    body = created.json()
    secret = body["token"]
    assert secret.startswith("fbt_")
    stored = await deps.store.db["api_tokens"].find_one({"_id": body["id"]})
    assert stored is not None
    assert secret not in str(stored)  # only the hash is kept

    async with client_for(deps) as script:
        bearer = {"Authorization": f"Bearer {secret}"}
        me = await script.get("/api/me", headers=bearer)
        assert me.status_code == 200
        assert me.json()["user"]["id"] == user.id
        # No session, so no CSRF token is needed for a change.
        made = await script.post("/api/tokens", json={"name": "second"}, headers=bearer)
        assert made.status_code == 201
        faxes = await script.get(f"/api/accounts/{user.account_id}/faxes", headers=bearer)
        assert faxes.status_code == 200
        listed = (await client.get("/api/tokens")).json()
        assert {t["name"] for t in listed} >= {"nightly export", "second"}
        assert all("token" not in t for t in listed)

        assert (await client.delete(f"/api/tokens/{body['id']}")).status_code == 204
        assert (await script.get("/api/me", headers=bearer)).status_code == 401
        bad = {"Authorization": "Bearer fbt_made-up"}
        assert (await script.get("/api/me", headers=bad)).status_code == 401


async def test_another_users_token_cannot_be_revoked(deps: PortalDeps, world: World) -> None:
    token, _ = await deps.tokens.create(world.b.users[0], "b's")
    async with client_for(deps) as client:
        await sign_in(client, world.a.users[0].email)
        assert (await client.delete(f"/api/tokens/{token.id}")).status_code == 404
    assert any(t.id == token.id for t in await deps.tokens.list(world.b.users[0]))


async def test_a_tampered_session_cookie_is_not_a_session(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.users[0].email)
    value = client.cookies["faxbox_session"]
    client.cookies.set("faxbox_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert (await client.get("/api/me")).status_code == 401
    assert (await client.get("/faxes")).status_code == 303  # pages send you to sign in


async def test_html_sign_in_form(client: httpx.AsyncClient, world: World) -> None:
    page = await client.get("/login")
    assert page.status_code == 200
    token = client.cookies["faxbox_csrf"]
    assert f'value="{token}"' in page.text
    form = {"email": world.a.users[1].email, "password": PASSWORD}
    assert (await client.post("/login", data=form)).status_code == 403
    wrong = await client.post("/login", data=form | {"password": "nope", "csrf_token": token})
    assert wrong.status_code == 401
    assert "Wrong e-mail address or password" in wrong.text
    done = await client.post("/login", data=form | {"csrf_token": token})
    assert done.status_code == 303
    assert done.headers["location"] == "/faxes"
    assert (await client.get("/faxes")).status_code == 200


async def _set_password(email: str, typed: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faxbox.admin",
        "user",
        "set-password",
        "--email",
        email,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(typed.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_sets_a_password_that_signs_in_and_ends_old_sessions(
    deps: PortalDeps, store: Store, mongo_settings: MongoSettings, world: World
) -> None:
    user = world.b.users[1]
    env = os.environ | {
        "FAXBOX_MONGO_URL": mongo_settings.mongo_url,
        "FAXBOX_MONGO_DB": mongo_settings.mongo_db,
    }
    async with client_for(deps) as old:
        await sign_in(old, user.email)
        code, out, err = await _set_password(user.email, "a brand new passphrase\n", env)
        assert code == 0, err
        assert "password_hash" not in out
        stored = await store.get_user(user.id)
        assert stored.password_hash is not None
        assert stored.password_hash.startswith("$argon2id$")
        # The password changed: the session begun before it ends.
        assert (await old.get("/api/me")).status_code == 401
    async with client_for(deps) as new:
        await sign_in(new, user.email, "a brand new passphrase")
    code, _, err = await _set_password(user.email, "short\n", env)
    assert code == 2
    assert "8 to" in err
