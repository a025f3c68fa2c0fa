"""Times on the portal's pages follow the faxbox's time zone; the JSON API stays UTC.

One fax of Acme's alice, created at 20:30:15 UTC: 05:30:15 the next day in Tokyo, where
her faxbox is. Bob's faxbox is in New York, so Acme's admin (no faxbox of their own)
sees UTC, with the faxbox's own time beside it. Bravo's faxboxes are all in New York,
so Bravo's admin sees New York time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from faxbox.history.writes import HistoryWrites
from faxbox.portal.deps import PortalDeps
from faxbox.shared.store import Store
from faxbox.shared.store.monthly import month_key
from tests.integration.portal.conftest import client_for, sign_in
from tests.integration.portal.seed import World, history_doc

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Fax:
    id: str
    account_id: str
    month: str
    created: datetime  # UTC

    @property
    def url(self) -> str:
        return f"/faxes/{self.account_id}/{self.month}/{self.id}"


@pytest.fixture(scope="module")
async def zoned(store: Store, world: World) -> dict[str, Fax]:
    writes = HistoryWrites(store.history)
    alice, bob = world.a.users
    await store.update_faxbox(world.a.faxboxes[alice.id].id, timezone="Asia/Tokyo")
    await store.update_faxbox(world.a.faxboxes[bob.id].id, timezone="America/New_York")
    for user in world.b.users:
        await store.update_faxbox(world.b.faxboxes[user.id].id, timezone="America/New_York")
    day = (world.now - timedelta(days=5)).date()
    created = datetime(day.year, day.month, day.day, 20, 30, 15, tzinfo=UTC)
    faxes: dict[str, Fax] = {}
    for key, tenant, user in (("alice", world.a, alice), ("bravo", world.b, world.b.users[0])):
        fax_id = f"tz-{key}"
        doc = history_doc(
            fax_id=fax_id,
            account_id=tenant.account.id,
            user=user,
            faxbox=tenant.faxboxes[user.id],
            created_at=created,
            remote="+12125550100",
        )
        await writes.insert(tenant.account.id, doc)
        faxes[key] = Fax(fax_id, tenant.account.id, month_key(created), created)
    return faxes


@pytest.fixture
async def as_user(deps: PortalDeps) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(deps) as c:
        yield c


def day_param(moment: datetime) -> str:
    return moment.date().isoformat()


async def test_a_user_sees_their_faxbox_time_and_days(
    as_user: httpx.AsyncClient, world: World, zoned: dict[str, Fax]
) -> None:
    fax = zoned["alice"]
    await sign_in(as_user, world.a.users[0].email)
    tokyo_day = day_param(fax.created + timedelta(days=1))
    page = await as_user.get("/faxes", params={"start": tokyo_day, "end": tokyo_day})
    assert page.status_code == 200
    tokyo = (fax.created + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M")
    assert f"{tokyo} JST" in page.text
    assert fax.created.strftime("%Y-%m-%d %H:%M") not in page.text
    assert "faxbox's time" not in page.text  # her own zone: nothing to add
    assert "Asia/Tokyo" in page.text
    # The UTC day of the fax is the day before on her clock: not in that day's list.
    utc_day = day_param(fax.created)
    before = await as_user.get("/faxes", params={"start": utc_day, "end": utc_day})
    assert fax.id not in before.text
    assert fax.url in page.text


async def test_the_fax_page_shows_every_time_in_the_faxbox_zone(
    as_user: httpx.AsyncClient, world: World, zoned: dict[str, Fax]
) -> None:
    fax = zoned["alice"]
    await sign_in(as_user, world.a.users[0].email)
    page = await as_user.get(fax.url)
    assert page.status_code == 200
    created = (fax.created + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    sent = (fax.created + timedelta(hours=9, minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"{created} JST" in page.text  # created
    assert f"{sent} JST" in page.text  # updated, and the FaxSent timeline entry
    assert " UTC" not in page.text


async def test_an_admin_without_a_faxbox_sees_utc_and_the_faxbox_time(
    as_user: httpx.AsyncClient, world: World, zoned: dict[str, Fax]
) -> None:
    fax = zoned["alice"]
    await sign_in(as_user, world.a.admin.email)
    utc_day = day_param(fax.created)
    page = await as_user.get("/faxes", params={"start": utc_day, "end": utc_day})
    assert fax.url in page.text
    assert f"{fax.created:%Y-%m-%d %H:%M} UTC" in page.text
    tokyo = (fax.created + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M")
    assert f"faxbox's time: {tokyo} JST" in page.text
    detail = await as_user.get(fax.url)
    assert f"{fax.created:%Y-%m-%d %H:%M:%S} UTC" in detail.text
    assert f"{tokyo}:15 JST" in detail.text


async def test_an_admin_sees_the_zone_all_the_accounts_faxboxes_share(
    as_user: httpx.AsyncClient, world: World, zoned: dict[str, Fax]
) -> None:
    fax = zoned["bravo"]
    await sign_in(as_user, world.b.admin.email)
    # 20:30 UTC is 15:30 EST or 16:30 EDT, the same day.
    utc_day = day_param(fax.created)
    page = await as_user.get("/faxes", params={"start": utc_day, "end": utc_day})
    assert fax.url in page.text
    eastern = fax.created.astimezone(ZoneInfo("America/New_York"))
    assert eastern.strftime("%Y-%m-%d %H:%M %Z") in page.text
    assert eastern.strftime("%Z") in ("EST", "EDT")
    assert f"{fax.created:%Y-%m-%d %H:%M} UTC" not in page.text


async def test_the_json_api_keeps_utc(
    as_user: httpx.AsyncClient, world: World, zoned: dict[str, Fax]
) -> None:
    fax = zoned["alice"]
    await sign_in(as_user, world.a.users[0].email)
    response = await as_user.get(f"/api/accounts/{fax.account_id}/faxes/{fax.month}/{fax.id}")
    assert response.status_code == 200
    assert response.json()["created_at"] == fax.created.strftime("%Y-%m-%dT%H:%M:%SZ")
