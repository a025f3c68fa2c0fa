"""Sign-in brute-force limits on the real database, through the API and the form.

Each test uses its own e-mail addresses and client addresses (the database is shared by
the module) and a clock of its own, moved by hand instead of waiting out the window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import datetime, timedelta

import httpx
import pytest

from faxbox.portal.app import create_app
from faxbox.portal.clientaddr import TrustedProxies
from faxbox.portal.deps import PortalDeps
from faxbox.portal.throttle import COLLECTION, SignInLimits, SignInThrottle
from faxbox.shared.store import Store
from faxbox.shared.store.models import utc_now
from tests.integration.portal.seed import PASSWORD, World

pytestmark = pytest.mark.integration

LIMITS = SignInLimits(per_email_and_address=3, per_address=6, per_email=8, window_s=900)
PAIR = LIMITS.per_email_and_address


class ManualClock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def replica(
    deps: PortalDeps, clock: ManualClock, proxies: TrustedProxies | None = None
) -> PortalDeps:
    """A portal replica of its own (own throttle object), on the shared database."""
    return dataclasses.replace(
        deps,
        signin=SignInThrottle(deps.store.db, LIMITS, clock),
        proxies=proxies or TrustedProxies(),
    )


def client(deps: PortalDeps, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(deps), client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://portal.test")


@pytest.fixture
def portal(deps: PortalDeps, clock: ManualClock) -> PortalDeps:
    return replica(deps, clock)


async def api_sign_in(
    c: httpx.AsyncClient, email: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    token = (await c.get("/api/session/csrf")).json()["csrf_token"]
    headers = {"X-CSRF-Token": token}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return await c.post(
        "/api/session", json={"email": email, "password": password}, headers=headers
    )


async def test_an_account_is_locked_after_its_failures_until_the_window_passes(
    portal: PortalDeps, clock: ManualClock, world: World
) -> None:
    email = world.a.users[0].email
    async with client(portal, "192.0.2.1") as c:
        for _ in range(PAIR):
            assert (await api_sign_in(c, email, "wrong")).status_code == 401
            clock.advance(100)
        # The right password too: the limit stops guessing before looking at it.
        locked = await api_sign_in(c, email, PASSWORD)
        assert locked.status_code == 429
        assert "Too many failed sign-ins" in locked.json()["detail"]
        # The first failure leaves the window 900 s after it: 600 s from now.
        assert locked.headers["Retry-After"] == "600"
        clock.advance(599)
        assert (await api_sign_in(c, email, PASSWORD)).status_code == 429
        clock.advance(1)
        assert (await api_sign_in(c, email, PASSWORD)).status_code == 200


async def test_guessing_from_one_address_does_not_lock_the_user_out_elsewhere(
    portal: PortalDeps, world: World
) -> None:
    email = world.reseller.users[0].email
    async with client(portal, "203.0.113.66") as attacker:
        for _ in range(PAIR):
            assert (await api_sign_in(attacker, email.upper(), "wrong")).status_code == 401
        assert (await api_sign_in(attacker, email, PASSWORD)).status_code == 429
    # The limit is keyed by account and address: the user, elsewhere, still gets in.
    async with client(portal, "192.0.2.99") as user:
        assert (await api_sign_in(user, email, PASSWORD)).status_code == 200
    # ... and the user's success does not wipe the attacker's failures.
    async with client(portal, "203.0.113.66") as attacker:
        assert (await api_sign_in(attacker, email, "wrong")).status_code == 429


async def test_guessing_spread_over_many_addresses_meets_the_account_backstop(
    portal: PortalDeps, world: World
) -> None:
    email = "nobody-1@acme.portal.test"
    for n in range(LIMITS.per_email):
        async with client(portal, f"192.0.2.{110 + n}") as c:
            assert (await api_sign_in(c, email, "wrong")).status_code == 401
    async with client(portal, "192.0.2.180") as c:
        assert (await api_sign_in(c, email, "wrong")).status_code == 429
        # Another account from the same client is not affected.
        assert (await api_sign_in(c, world.a.users[1].email, PASSWORD)).status_code == 200


async def test_a_forwarded_for_header_from_a_non_proxy_is_ignored(
    portal: PortalDeps, world: World
) -> None:
    """A client rotating X-Forwarded-For to look like many addresses is still one."""
    email = world.b.users[1].email
    async with client(portal, "203.0.113.7") as c:
        for n in range(PAIR):
            spoofed = f"198.18.0.{n + 1}"
            assert (await api_sign_in(c, email, "wrong", spoofed)).status_code == 401
        assert (await api_sign_in(c, email, PASSWORD, "198.18.0.200")).status_code == 429


async def test_behind_a_trusted_proxy_each_client_counts_apart(
    deps: PortalDeps, clock: ManualClock, world: World
) -> None:
    portal = replica(deps, clock, TrustedProxies.parse(["10.0.0.0/8"]))
    email = world.reseller.admin.email
    async with client(portal, "10.1.2.3") as proxy:
        for _ in range(PAIR):
            response = await api_sign_in(proxy, email, "wrong", "1.2.3.4, 198.51.100.77")
            assert response.status_code == 401
        # The client the proxy saw is 198.51.100.77 (whatever it wrote left of that).
        locked = await api_sign_in(proxy, email, PASSWORD, "5.6.7.8, 198.51.100.77")
        assert locked.status_code == 429
        other = await api_sign_in(proxy, email, PASSWORD, "198.51.100.78")
        assert other.status_code == 200


async def test_a_client_address_is_limited_across_accounts(
    portal: PortalDeps, world: World
) -> None:
    async with client(portal, "198.51.100.1") as c:
        for n in range(LIMITS.per_address):
            response = await api_sign_in(c, f"guess-{n}@acme.portal.test", "wrong")
            assert response.status_code == 401
        assert (await api_sign_in(c, world.a.admin.email, PASSWORD)).status_code == 429
    async with client(portal, "198.51.100.2") as other:
        assert (await api_sign_in(other, world.a.admin.email, PASSWORD)).status_code == 200


async def test_a_success_clears_the_accounts_failures(portal: PortalDeps, world: World) -> None:
    email = world.b.users[0].email
    async with client(portal, "192.0.2.30") as c:
        for _ in range(PAIR - 1):
            assert (await api_sign_in(c, email, "wrong")).status_code == 401
        assert (await api_sign_in(c, email, PASSWORD)).status_code == 200
        for _ in range(PAIR):
            assert (await api_sign_in(c, email, "wrong")).status_code == 401
        assert (await api_sign_in(c, email, "wrong")).status_code == 429


async def test_the_limit_holds_across_replicas(
    deps: PortalDeps, clock: ManualClock, store: Store
) -> None:
    email = "nobody-2@acme.portal.test"
    one, two = replica(deps, clock), replica(deps, clock)
    async with client(one, "192.0.2.40") as a, client(two, "192.0.2.40") as b:
        for n in range(PAIR):
            assert (await api_sign_in(a if n % 2 else b, email, "wrong")).status_code == 401
        assert (await api_sign_in(a, email, "wrong")).status_code == 429
        assert (await api_sign_in(b, email, "wrong")).status_code == 429
    # Refused attempts are not kept: only the three failures count.
    assert await store.db[COLLECTION].count_documents({"email": email}) == PAIR


async def test_concurrent_guesses_get_no_more_than_the_limit(
    portal: PortalDeps,
) -> None:
    email = "nobody-3@acme.portal.test"
    async with client(portal, "192.0.2.50") as c:
        responses = await asyncio.gather(*(api_sign_in(c, email, "wrong") for _ in range(12)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {401, 429}
    assert codes.count(401) <= PAIR
    assert codes.count(429) >= 12 - PAIR


async def test_the_sign_in_form_explains_the_limit(portal: PortalDeps) -> None:
    email = "nobody-4@acme.portal.test"
    async with client(portal, "192.0.2.60") as c:
        form = await c.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match is not None
        data = {"email": email, "password": "wrong", "csrf_token": match.group(1)}
        for _ in range(PAIR):
            assert (await c.post("/login", data=data)).status_code == 401
        page = await c.post("/login", data=data)
    assert page.status_code == 429
    assert page.headers["Retry-After"] == "900"
    assert "Too many failed sign-ins for this account or from your network" in page.text
    assert "Try again in 15 minutes." in page.text
    assert 'name="password"' in page.text  # the form is still there
