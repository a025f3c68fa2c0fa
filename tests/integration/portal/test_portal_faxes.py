"""The Fax tab through the JSON API and the pages: ranges, pagination, search, detail,
downloads, and each role's view."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from faxbox.history.writes import HistoryWrites
from faxbox.shared.store import Store
from faxbox.shared.store.monthly import month_key
from tests.integration.portal.conftest import sign_in
from tests.integration.portal.seed import World, history_doc

pytestmark = pytest.mark.integration


def _ids(page: dict[str, object]) -> list[str]:
    return [item["id"] for item in page["items"]]  # type: ignore[attr-defined]


async def test_a_user_sees_their_own_faxes_of_the_last_30_days(
    client: httpx.AsyncClient, world: World
) -> None:
    alice = world.a.users[0]
    await sign_in(client, alice.email)
    page = (await client.get(f"/api/accounts/{world.a.account.id}/faxes")).json()
    items = page["items"]
    assert len(items) == 3  # ages 0.01, 2 and 10 days; older ones are outside the range
    assert {i["user_id"] for i in items} == {alice.id}
    assert [i["created_at"] for i in items] == sorted(
        (i["created_at"] for i in items), reverse=True
    )
    assert "outside this range" in page["note"]
    first = items[0]
    assert first["direction"] in ("outbound", "inbound")
    assert first["remote_number"].startswith("+1646555")
    assert first["pages"] in (1, 2)
    assert set(first["documents"]) == {"pdf", "tiff"}


async def test_pages_across_months_never_repeat_or_skip(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.admin.email)
    account = world.a.account.id
    params = {
        "start": (world.now - timedelta(days=200)).isoformat(),
        "end": (world.now + timedelta(minutes=1)).isoformat(),
        "limit": "3",
    }
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        page = (await client.get(f"/api/accounts/{account}/faxes", params=query)).json()
        seen += _ids(page)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(world.a.faxes)  # every fax of the account, once
    assert len(set(seen)) == len(seen)
    assert pages == 5  # 14 faxes, 3 a page
    months = {world.a.faxes[f][0] for f in seen}
    assert len(months) >= 4


async def test_filters_by_user_direction_and_number(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.a.admin.email)
    base = f"/api/accounts/{world.a.account.id}/faxes"
    wide = {"start": (world.now - timedelta(days=200)).isoformat()}
    bob = world.a.users[1]
    by_user = (await client.get(base, params=wide | {"user_id": bob.id})).json()["items"]
    assert len(by_user) == 7
    assert {i["user_id"] for i in by_user} == {bob.id}
    inbound = (await client.get(base, params=wide | {"direction": "inbound"})).json()["items"]
    assert inbound
    assert {i["direction"] for i in inbound} == {"inbound"}
    target = by_user[3]["remote_number"]
    for typed in (target, target[-6:], target.lstrip("+")):
        found = (await client.get(base, params=wide | {"number": typed})).json()["items"]
        assert [i["remote_number"] for i in found] == [target], typed
    # Our own number matches too (every fax of bob's faxbox).
    local = (await client.get(base, params=wide | {"number": "9111"})).json()["items"]
    assert len(local) == 7
    # Regex characters are taken literally ("*" is a keypad digit), not as a pattern.
    assert (await client.get(base, params=wide | {"number": ".*"})).json()["items"] == []
    assert (await client.get(base, params=wide | {"number": "+1(6"})).status_code == 200


async def test_detail_has_timeline_and_t30_statistics(
    client: httpx.AsyncClient, world: World
) -> None:
    alice = world.a.users[0]
    await sign_in(client, alice.email)
    fax_id, month = world.fax_of(world.a, alice)
    url = f"/api/accounts/{world.a.account.id}/faxes/{month}/{fax_id}"
    detail = (await client.get(url)).json()
    assert detail["id"] == fax_id
    assert detail["timeline"][0]["type"] == "OutboundFaxRequested"
    assert detail["statistics"]["bit_rate"] == 14400
    assert detail["statistics"]["ecm"] is True
    page = await client.get(f"/faxes/{world.a.account.id}/{month}/{fax_id}")
    assert page.status_code == 200
    assert "14400 bit/s" in page.text
    assert "Timeline" in page.text
    assert f"{url}/documents/pdf" in page.text


async def test_download_pdf_and_tiff(client: httpx.AsyncClient, world: World) -> None:
    alice = world.a.users[0]
    await sign_in(client, alice.email)
    fax_id, month = world.fax_of(world.a, alice)
    base = f"/api/accounts/{world.a.account.id}/faxes/{month}/{fax_id}/documents"
    pdf = await client.get(f"{base}/pdf")
    assert pdf.status_code == 200
    assert pdf.content == world.pdf
    assert pdf.headers["content-type"] == "application/pdf"
    assert "attachment" in pdf.headers["content-disposition"]
    tiff = await client.get(f"{base}/tiff")
    assert tiff.status_code == 200
    assert tiff.content.startswith(b"II*\x00")
    assert (await client.get(f"{base}/original")).status_code == 404
    assert (await client.get(f"{base}/secret")).status_code == 422


async def test_old_fax_without_documents_has_no_download(
    client: httpx.AsyncClient, world: World
) -> None:
    alice = world.a.users[0]
    await sign_in(client, alice.email)
    old = [f for f, (m, u) in world.a.faxes.items() if u == alice.id][-1]  # 130 days old
    month = world.a.faxes[old][0]
    url = f"/api/accounts/{world.a.account.id}/faxes/{month}/{old}"
    assert (await client.get(url)).json()["documents"] == []
    assert (await client.get(f"{url}/documents/pdf")).status_code == 404


async def test_fax_page_lists_range_and_pages(client: httpx.AsyncClient, world: World) -> None:
    await sign_in(client, world.a.admin.email)
    html = await client.get("/faxes")
    assert html.status_code == 200
    assert "outside this range" in html.text
    start = (world.now - timedelta(days=200)).date().isoformat()
    page1 = await client.get("/faxes", params={"start": start})
    assert page1.text.count("Details</a>") == 14  # 14 faxes fit one 50-fax page
    assert (await client.get("/faxes", params={"start": "yesterday"})).status_code == 422
    reversed_range = {"start": "2026-02-01", "end": "2026-01-01"}
    assert (await client.get("/faxes", params=reversed_range)).status_code == 422


async def test_reseller_sees_its_customers_faxes(client: httpx.AsyncClient, world: World) -> None:
    await sign_in(client, world.reseller.admin.email)
    accounts = {a["id"] for a in (await client.get("/api/accounts")).json()}
    assert accounts == {world.reseller.account.id, world.a.account.id}
    wide = {"start": (world.now - timedelta(days=200)).isoformat()}
    page = await client.get(
        f"/api/accounts/{world.a.account.id}/faxes", params=wide | {"limit": "50"}
    )
    assert sorted(_ids(page.json())) == sorted(world.a.faxes)
    html = await client.get("/faxes", params={"account": world.a.account.id})
    assert "Acme" in html.text


async def test_month_key_of_now_is_used_for_recent_faxes(world: World) -> None:
    assert any(m == month_key(world.now) for m, _ in world.a.faxes.values())


async def test_the_fax_page_says_how_many_calls_carried_a_resumed_fax(
    client: httpx.AsyncClient, world: World, store: Store
) -> None:
    alice = world.a.users[0]
    # Older than every range the other tests list, so it is in none of their counts.
    created = world.now - timedelta(days=300)
    doc = history_doc(
        fax_id="fax-resumed",
        account_id=world.a.account.id,
        user=alice,
        faxbox=world.a.faxboxes[alice.id],
        created_at=created,
        remote="+12125550194",
    )
    await HistoryWrites(store.history).insert(world.a.account.id, doc | {"calls": 2})
    plain = history_doc(
        fax_id="fax-one-call",
        account_id=world.a.account.id,
        user=alice,
        faxbox=world.a.faxboxes[alice.id],
        created_at=created,
        remote="+12125550100",
    )
    await HistoryWrites(store.history).insert(world.a.account.id, plain)
    await sign_in(client, alice.email)
    base = f"/faxes/{world.a.account.id}/{month_key(created)}"
    page = await client.get(f"{base}/fax-resumed")
    assert page.status_code == 200
    assert '<dt>Calls that carried it</dt><dd id="calls">2</dd>' in page.text
    older = await client.get(f"{base}/fax-one-call")  # recorded before calls were counted
    assert older.status_code == 200
    assert 'id="calls"' not in older.text
