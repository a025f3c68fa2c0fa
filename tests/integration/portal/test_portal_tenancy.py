"""Every endpoint with another tenant's ids answers 404 (never 403, never data).

Each principal tries ids it must not reach: another user's fax in the same account
(plain users), and every id of an unrelated account (users, admins, resellers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.portal.conftest import sign_in
from tests.integration.portal.seed import Tenant, World

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Target:
    account_id: str
    user_id: str
    fax_id: str
    month: str
    number: str


def target_in(world: World, tenant: Tenant, user_index: int = 0) -> Target:
    user = tenant.users[user_index]
    fax_id, month = world.fax_of(tenant, user)
    return Target(tenant.account.id, user.id, fax_id, month, tenant.faxboxes[user.id].numbers[0])


def endpoints(t: Target) -> list[tuple[str, str, dict[str, object] | None]]:
    fax = f"/api/accounts/{t.account_id}/faxes/{t.month}/{t.fax_id}"
    user = f"/api/accounts/{t.account_id}/users/{t.user_id}"
    return [
        ("GET", f"/api/accounts/{t.account_id}/faxes", None),
        ("GET", fax, None),
        ("GET", f"{fax}/documents/pdf", None),
        ("GET", f"{fax}/documents/tiff", None),
        ("GET", f"/api/accounts/{t.account_id}/users", None),
        ("GET", user, None),
        ("PATCH", f"{user}/faxbox", {"enabled": False}),
        ("PUT", f"{user}/alternate-email", {"alternate_email": "x@example.com"}),
        ("POST", f"{user}/faxbox/numbers", {"number": "+12125550199"}),
        ("DELETE", f"{user}/faxbox/numbers/{t.number}", None),
        ("GET", f"/api/accounts/{t.account_id}/show-help?number=2125550100", None),
        # pages
        ("GET", f"/faxes?account={t.account_id}", None),
        ("GET", f"/faxes/{t.account_id}/{t.month}/{t.fax_id}", None),
        ("GET", f"/admin/accounts/{t.account_id}", None),
        ("GET", f"/admin/accounts/{t.account_id}/users/{t.user_id}", None),
    ]


async def _request(
    client: httpx.AsyncClient, method: str, url: str, body: dict[str, object] | None
) -> httpx.Response:
    if url.startswith("/api/"):
        return await client.request(method, url, json=body)
    return await client.request(method, url)


Who = Callable[[World], tuple[str, list[Target]]]


def _user(world: World) -> tuple[str, list[Target]]:
    # alice of A: bob's fax in her own account, and all of B
    return world.a.users[0].email, [target_in(world, world.b), target_in(world, world.a, 1)]


def _account_admin(world: World) -> tuple[str, list[Target]]:
    return world.a.admin.email, [target_in(world, world.b), target_in(world, world.reseller)]


def _reseller(world: World) -> tuple[str, list[Target]]:
    return world.reseller.admin.email, [target_in(world, world.b)]


def _other_reseller_customer_via_own_path(world: World) -> tuple[str, list[Target]]:
    # A's admin naming B's user/fax under A's own account id.
    b = target_in(world, world.b)
    return world.a.admin.email, [Target(world.a.account.id, b.user_id, b.fax_id, b.month, b.number)]


@pytest.mark.parametrize(
    "who", [_user, _account_admin, _reseller, _other_reseller_customer_via_own_path]
)
async def test_other_tenants_ids_are_not_found(
    client: httpx.AsyncClient, world: World, who: Who
) -> None:
    email, targets = who(world)
    await sign_in(client, email)
    is_plain_user = email == world.a.users[0].email
    own_account = world.a.account.id if email.endswith("acme.portal.test") else None
    checked = 0
    for target in targets:
        for method, url, body in endpoints(target):
            response = await _request(client, method, url, body)
            own = target.account_id == own_account
            names_target = target.fax_id in url or target.user_id in url
            admin_only = "/users" in url or url.startswith("/admin/")
            if own and not names_target:
                if is_plain_user and not admin_only:
                    # Her own account's list (and show-help): bob's fax is simply absent.
                    assert response.status_code == 200, (method, url)
                    assert target.fax_id not in response.text
                continue
            if is_plain_user and own and admin_only:
                # Administration of her own account: a role question, not a secret.
                assert response.status_code == 403, (method, url, response.text)
            else:
                assert response.status_code == 404, (email, method, url, response.text)
                assert target.fax_id not in response.text
            checked += 1
    assert checked >= 8


async def test_nothing_changed_for_the_other_tenant(
    client: httpx.AsyncClient, world: World
) -> None:
    b_user = world.b.users[0]
    box = world.b.faxboxes[b_user.id]
    store_box = await client.get("/api/me")  # not signed in: 401
    assert store_box.status_code == 401
    await sign_in(client, world.b.admin.email)
    row = (await client.get(f"/api/accounts/{world.b.account.id}/users/{b_user.id}")).json()
    assert row["faxbox"]["enabled"] is True
    assert row["faxbox"]["numbers"] == box.numbers
    assert row["user"]["alternate_email"] is None


async def test_plain_users_list_shows_only_their_faxes_even_with_a_user_filter(
    client: httpx.AsyncClient, world: World
) -> None:
    alice, bob = world.a.users
    await sign_in(client, alice.email)
    url = f"/api/accounts/{world.a.account.id}/faxes"
    page = (await client.get(url, params={"user_id": bob.id})).json()
    assert page["items"] == []
