"""Faxbox administration: numbers, settings, alternate address, show-help (API and pages)."""

from __future__ import annotations

import httpx
import pytest

from faxbox.shared.store import Store
from tests.integration.portal.conftest import sign_in
from tests.integration.portal.seed import World

pytestmark = pytest.mark.integration


def _user_url(world: World, index: int = 0) -> str:
    return f"/api/accounts/{world.a.account.id}/users/{world.a.users[index].id}"


async def test_admin_lists_the_accounts_users_with_faxboxes(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.admin.email)
    rows = (await client.get(f"/api/accounts/{world.a.account.id}/users")).json()
    by_email = {r["user"]["email"]: r for r in rows}
    assert set(by_email) == {u.email for u in (world.a.admin, *world.a.users)}
    assert by_email[world.a.users[0].email]["faxbox"]["numbers"] == ["+12125550111"]
    assert by_email[world.a.admin.email]["faxbox"] is None


async def test_assign_normalizes_and_numbers_are_unique_platform_wide(
    client: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(client, world.a.admin.email)
    numbers = f"{_user_url(world)}/faxbox/numbers"
    made = await client.post(numbers, json={"number": "12125550177"})
    assert made.status_code == 201, made.text
    assert "+12125550177" in made.json()["faxbox"]["numbers"]
    extension = await client.post(numbers, json={"number": " 4711 "})
    assert "4711" in extension.json()["faxbox"]["numbers"]
    # Several numbers on one faxbox, mirrored in the numbers collection.
    assignment = await store.find_number("+12125550177")
    assert assignment is not None
    assert assignment.faxbox_id == world.a.faxboxes[world.a.users[0].id].id
    # B's number is not A's to assign; the same number for bob is taken.
    taken = await client.post(numbers, json={"number": "+12125550121"})
    assert taken.status_code == 422
    assert "not one of this account's numbers" in taken.json()["detail"]
    assert "fbx_" not in taken.text  # the other tenant's faxbox stays unnamed
    nobodys = await client.post(numbers, json={"number": "+12125550199"})
    assert nobodys.status_code == 422
    bob = f"{_user_url(world, 1)}/faxbox/numbers"
    assert (await client.post(bob, json={"number": "+1 212 555 0177"})).status_code == 422
    assert (await client.post(bob, json={"number": "+12125550177"})).status_code == 409
    refused = await client.post(bob, json={"number": "020 7946 0958"})
    assert refused.status_code == 422
    assert "cannot be assigned" in refused.json()["detail"]
    # Remove: only from the faxbox that has it.
    assert (await client.delete(f"{bob}/+12125550177")).status_code == 404
    removed = await client.delete(f"{numbers}/+12125550177")
    assert removed.status_code == 200
    assert "+12125550177" not in removed.json()["faxbox"]["numbers"]
    assert await store.find_number("+12125550177") is None
    assert (await client.delete(f"{numbers}/4711")).status_code == 200


async def test_settings_enable_disable_and_validation(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.admin.email)
    url = f"{_user_url(world, 1)}/faxbox"
    assigned = await client.post(f"{url}/numbers", json={"number": "+12125550178"})
    assert assigned.status_code == 201, assigned.text
    # Alice's number is not bob's to present.
    alices = await client.patch(url, json={"caller_id": "2125550111"})
    assert alices.status_code == 422
    assert "not one of the faxbox's own numbers" in alices.json()["detail"]
    changes = {
        "enabled": False,
        "caller_id": "2125550178",
        "identity": "ACME FAX",
        "header_name": "Acme Corp",
        "header_format": "From %%n|%c|Page %%p of %%t",
        "timezone": "Europe/Berlin",
        "permission_list": ["@acme.example", "boss@partner.example"],
        "sender_auth": "off",
        "success_notifications": False,
    }
    response = await client.patch(url, json=changes)
    assert response.status_code == 200, response.text
    box = response.json()["faxbox"]
    assert box["enabled"] is False
    assert box["caller_id"] == "+12125550178"
    assert box["permission_list"] == ["@acme.example", "boss@partner.example"]
    assert box["timezone"] == "Europe/Berlin"
    assert box["sender_auth"] == "off"
    assert box["header_format"] == "From %%n|%c|Page %%p of %%t"
    assert box["success_notifications"] is False
    assert (await client.patch(url, json={"enabled": True})).json()["faxbox"]["enabled"] is True
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"identity": "x" * 21},
        {"permission_list": ["not an address"]},
        {"caller_id": "call me"},
        {"sender_auth": "sometimes"},
        {"header_format": "%%z is no field"},
        {"numbers": ["+1"]},
    ):
        answer = await client.patch(url, json=bad)
        assert answer.status_code == 422, bad
    after = (await client.get(_user_url(world, 1))).json()["faxbox"]
    assert after["timezone"] == "Europe/Berlin"


async def test_a_user_without_faxbox_gets_one_when_configured(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.admin.email)
    admin_url = f"/api/accounts/{world.a.account.id}/users/{world.a.admin.id}"
    made = await client.patch(f"{admin_url}/faxbox", json={"header_name": "Front desk"})
    assert made.json()["faxbox"]["enabled"] is False  # created disabled until enabled
    enabled = await client.patch(f"{admin_url}/faxbox", json={"enabled": True})
    assert enabled.json()["faxbox"]["enabled"] is True


async def test_alternate_email(client: httpx.AsyncClient, world: World) -> None:
    await sign_in(client, world.a.admin.email)
    url = f"{_user_url(world)}/alternate-email"
    done = await client.put(url, json={"alternate_email": "faxes@acme.example"})
    assert done.json()["user"]["alternate_email"] == "faxes@acme.example"
    assert (await client.put(url, json={"alternate_email": "nope"})).status_code == 422
    cleared = await client.put(url, json={"alternate_email": None})
    assert cleared.json()["user"]["alternate_email"] is None


@pytest.mark.parametrize(
    ("number", "to", "refusal"),
    [
        ("2125550100", "+12125550100@acme.portal.test", None),
        # Only the home country (North America) until a reseller widens it.
        ("+442079460958", None, "country_not_allowed"),
        ("19005550100", None, "blocked_category"),
        ("212-555-0100", None, "invalid_characters"),
    ],
)
async def test_show_help(
    client: httpx.AsyncClient, world: World, number: str, to: str | None, refusal: str | None
) -> None:
    await sign_in(client, world.a.admin.email)
    answer = await client.get(
        f"/api/accounts/{world.a.account.id}/show-help", params={"number": number}
    )
    body = answer.json()
    assert body["to"] == to
    assert body["refusal_code"] == refusal
    if refusal:
        assert body["refusal"]


async def test_admin_pages_assign_and_settings_forms(
    client: httpx.AsyncClient, world: World
) -> None:
    csrf = await sign_in(client, world.a.admin.email)
    account = world.a.account.id
    user = world.a.users[1]
    page = await client.get(f"/admin/accounts/{account}", params={"help_number": "2125550100"})
    assert "+12125550100@acme.portal.test" in page.text
    assert user.email in page.text
    base = f"/admin/accounts/{account}/users/{user.id}"
    assert (await client.get(base)).status_code == 200
    # Without the form's token nothing happens.
    del client.headers["X-CSRF-Token"]
    assert (await client.post(f"{base}/numbers", data={"number": "4712"})).status_code == 403
    done = await client.post(f"{base}/numbers", data={"number": "4712", "csrf_token": csrf})
    assert done.status_code == 303
    assert "assigned" in done.headers["location"]
    assert "4712" in (await client.get(base)).text
    again = await client.post(f"{base}/numbers", data={"number": "4712", "csrf_token": csrf})
    assert "msg=" in again.headers["location"]  # the same faxbox again: nothing to do
    taken = await client.post(f"{base}/numbers", data={"number": "9121", "csrf_token": csrf})
    assert "not+one+of+this+account" in taken.headers["location"]
    form = {
        "csrf_token": csrf,
        "caller_id": "",
        "identity": "BOB",
        "header_name": "Bob",
        "timezone": "America/New_York",
        "permission_list": "@bob.example\n\nfriend@x.example\n",
        "success_notifications": "1",
    }
    saved = await client.post(f"{base}/faxbox", data=form)
    assert "Settings+saved" in saved.headers["location"]
    detail = await client.get(f"/api/accounts/{account}/users/{user.id}")
    box = detail.json()["faxbox"]
    assert box["permission_list"] == ["@bob.example", "friend@x.example"]
    assert box["sender_auth"] == "required"  # the form's default
    assert box["caller_id"] is None
    bad = await client.post(f"{base}/faxbox", data=form | {"timezone": "Nowhere/Else"})
    assert "error=" in bad.headers["location"]
    off = await client.post(f"{base}/faxbox/enabled", data={"enabled": "no", "csrf_token": csrf})
    assert off.status_code == 303
    assert (await client.get(f"/api/accounts/{account}/users/{user.id}")).json()["faxbox"][
        "enabled"
    ] is False
    removed = await client.post(
        f"{base}/numbers/remove", data={"number": "4712", "csrf_token": csrf}
    )
    assert removed.status_code == 303
    alt = await client.post(
        f"{base}/alternate-email", data={"alternate_email": "b@x.example", "csrf_token": csrf}
    )
    assert alt.status_code == 303


async def test_plain_users_cannot_administer(client: httpx.AsyncClient, world: World) -> None:
    await sign_in(client, world.a.users[0].email)
    assert (await client.get(f"/api/accounts/{world.a.account.id}/users")).status_code == 403
    assert (await client.get("/admin")).status_code == 403
    own = f"/api/accounts/{world.a.account.id}/users/{world.a.users[0].id}/faxbox"
    assert (await client.patch(own, json={"enabled": False})).status_code == 403
