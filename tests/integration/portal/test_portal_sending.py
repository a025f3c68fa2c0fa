"""Sending without email through the API: submit, idempotency, look up, cancel, resend.

Real FerretDB (the seeded world, documents in GridFS) and RabbitMQ: what the portal
publishes is read back from the events exchange with a tap, as the validator and the
transmitter would receive it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from faxbox.history.adapters import MongoHistoryWriter
from faxbox.history.changes import change_for
from faxbox.portal.deps import PortalDeps
from faxbox.portal.outbound import SendLimits
from faxbox.portal.security import TokenScope, TokenStore
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import (
    FaxAttemptStarted,
    FaxCancelRequested,
    FaxSent,
    FaxSubmitted,
    PageReport,
    TransferStatistics,
)
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Store
from faxbox.shared.store.cancellations import Cancellations
from tests.integration.portal.conftest import client_for, make_deps, portal_outbox
from tests.integration.portal.seed import World, tiny_pdf

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    for consumer in ("validator", "transmitter"):  # so the portal's publishes are routed
        await bus.declare_service(consumer)
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def sending(store: Store, http: httpx.AsyncClient, world: World, bus: Bus) -> PortalDeps:
    tokens = TokenStore(store.db)
    await tokens.ensure_indexes()
    return make_deps(
        store,
        tokens,
        http,
        outbox=portal_outbox(store, bus),
        send_limits=SendLimits(max_upload_bytes=200_000),
    )


async def bearer(deps: PortalDeps, user_id: str, scope: str) -> dict[str, str]:
    user = await deps.store.get_user(user_id)
    _, secret = await deps.tokens.create(user, "script", TokenScope(scope))
    return {"Authorization": f"Bearer {secret}"}


async def post_fax(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pdf: bytes,
    *numbers: str,
    faxbox: str | None = None,
) -> httpx.Response:
    data: dict[str, object] = {"to": list(numbers)}
    if faxbox:
        data["faxbox"] = faxbox
    return await client.post(
        "/api/v1/faxes",
        headers=headers,
        files={"file": ("contract.pdf", pdf, "application/pdf")},
        data=data,
    )


async def test_a_send_token_submits_one_fax_per_distinct_number(
    sending: PortalDeps, bus: Bus, store: Store, world: World
) -> None:
    alice = world.a.users[0]
    headers = await bearer(sending, alice.id, "send")
    async with EventTap(bus, ("fax.outbound.submitted",)) as tap, client_for(sending) as client:
        response = await post_fax(
            client, headers, world.pdf, "+12125550123, 2125550123", "+13125550188"
        )
        assert response.status_code == 202, response.text
        body = response.json()
        first = body["submission_id"]
        assert [(f["id"], f["to"], f["status"]) for f in body["faxes"]] == [
            (first, "+12125550123", "queued"),
            (f"{first}-2", "+13125550188", "queued"),
        ]
        assert body["faxes"][1]["url"] == f"/api/v1/faxes/{first}-2"
        message = await tap.get(10)
    assert isinstance(message, FaxSubmitted)
    assert message.fax_id == first
    assert message.numbers == ("+12125550123", "+13125550188")
    assert message.faxbox_id == world.a.faxboxes[alice.id].id
    assert (message.user_id, message.channel) == (alice.id, "api")
    assert await store.documents.get(message.document) == world.pdf


async def test_sending_needs_the_send_scope(sending: PortalDeps, world: World) -> None:
    alice = world.a.users[0]
    async with client_for(sending) as client:
        headers = await bearer(sending, alice.id, "read")
        response = await post_fax(client, headers, world.pdf, "+12125550123")
        # A token that may send changes nothing else: that is scope admin.
        sender = await bearer(sending, alice.id, "send")
        other_change = await client.post("/api/tokens", json={"name": "x"}, headers=sender)
    assert response.status_code == 403
    assert "send" in response.json()["detail"]
    assert other_change.status_code == 403
    assert "admin" in other_change.json()["detail"]


async def test_an_idempotency_key_gives_the_same_faxes_or_a_conflict(
    sending: PortalDeps, bus: Bus, world: World
) -> None:
    alice = world.a.users[0]
    headers = await bearer(sending, alice.id, "send") | {"Idempotency-Key": "order-4711"}
    async with EventTap(bus, ("fax.outbound.submitted",)) as tap, client_for(sending) as client:
        first = await post_fax(client, headers, world.pdf, "+12125550123")
        again = await post_fax(client, headers, world.pdf, "+12125550123")
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        other_number = await post_fax(client, headers, world.pdf, "+12125550124")
        other_file = await post_fax(client, headers, tiny_pdf("another"), "+12125550123")
        for conflict in (other_number, other_file):
            assert conflict.status_code == 409
            assert conflict.json()["code"] == "idempotency_key_reused"
        await tap.get(10)
        with pytest.raises(TimeoutError):
            await tap.get(1)  # published once


@pytest.mark.parametrize(
    ("numbers", "data", "status", "code"),
    [
        (["555"], b"", 422, "invalid_number"),
        (["+12125550123"], b"GIF89a not a fax", 415, "unsupported_document"),
        (["+12125550123"], b"%PDF-" + b"x" * 300_000, 413, "document_too_large"),
        (["+1900555012"], b"", 422, "invalid_number"),
        (["+442079460958"], b"", 422, "country_not_allowed"),  # home country only
        ([], b"", 422, "no_number"),
    ],
)
async def test_what_cannot_be_sent_is_refused_at_once(
    sending: PortalDeps, world: World, numbers: list[str], data: bytes, status: int, code: str
) -> None:
    alice = world.a.users[0]
    async with client_for(sending) as client:
        response = await client.post(
            "/api/v1/faxes",
            headers=await bearer(sending, alice.id, "send"),
            files={"file": ("x.pdf", data or world.pdf, "application/pdf")},
            data={"to": numbers or [" "]},
        )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_an_oversized_upload_is_refused_before_it_is_read(
    sending: PortalDeps, world: World
) -> None:
    alice = world.a.users[0]
    async with client_for(sending) as client:
        response = await client.post(
            "/api/v1/faxes",
            headers=await bearer(sending, alice.id, "send") | {"Content-Length": "5000000"},
            content=b"x" * 16,
        )
    assert response.status_code == 413
    assert response.json()["code"] == "document_too_large"


async def test_an_admin_without_a_faxbox_names_one_they_manage(
    sending: PortalDeps, world: World
) -> None:
    admin = world.a.admin
    bob_box = world.a.faxboxes[world.a.users[1].id]
    headers = await bearer(sending, admin.id, "send")
    async with client_for(sending) as client:
        none = await post_fax(client, headers, world.pdf, "+12125550123")
        assert none.status_code == 422
        assert none.json()["code"] == "no_faxbox"
        named = await post_fax(client, headers, world.pdf, "+12125550123", faxbox=bob_box.id)
        assert named.status_code == 202
        other_tenant = world.b.faxboxes[world.b.users[0].id]
        foreign = await post_fax(client, headers, world.pdf, "+12125550123", faxbox=other_tenant.id)
        assert foreign.status_code == 404


def _page(number: int, confirmed: bool = True) -> PageReport:
    return PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        encoding="T.6",
        length=2292,
        image_bytes=40_000,
        bad_rows=0,
        longest_bad_row_run=0,
        ecm_retries=0,
    )


async def test_a_fax_is_queued_then_shows_what_the_history_says(
    sending: PortalDeps, store: Store, world: World
) -> None:
    alice, bob = world.a.users
    headers = await bearer(sending, alice.id, "send")
    async with client_for(sending) as client:
        created = await post_fax(client, headers, world.pdf, "+12125550123")
        fax = created.json()["faxes"][0]
        queued = (await client.get(fax["url"], headers=headers)).json()
        assert (queued["status"], queued["to"], queued["direction"]) == (
            "queued",
            "+12125550123",
            "outbound",
        )
        submission = await sending.sending.submissions.get(fax["id"])
        assert submission is not None
        box = world.a.faxboxes[alice.id]
        events = [
            FaxAttemptStarted(
                fax_id=fax["id"],
                account_id=world.a.account.id,
                month=submission.month,
                user_id=alice.id,
                faxbox_id=box.id,
                destination="+12125550123",
                attempt=1,
                carrier_id="car1",
                pages_total=2,
            )
        ]
        writer = MongoHistoryWriter(store.history)
        await writer.apply([change_for(e) for e in events])
        sending_now = (await client.get(fax["url"], headers=headers)).json()
        assert sending_now["status"] == "sending"
        assert sending_now["attempts"] == 1
        sent = FaxSent(
            fax_id=fax["id"],
            account_id=world.a.account.id,
            month=submission.month,
            user_id=alice.id,
            faxbox_id=box.id,
            destination="+12125550123",
            attempts=1,
            carrier_id="car1",
            statistics=TransferStatistics(
                pages_transferred=2,
                pages_total=2,
                bit_rate=14400,
                ecm=True,
                x_resolution=8031,
                y_resolution=7700,
                duration_s=20,
            ),
            transmitted_tiff=submission.submitted().document,
            page_report=(_page(1), _page(2)),
        )
        await writer.apply([change_for(sent)])
        done = (await client.get(fax["url"], headers=headers)).json()
        assert done["status"] == "delivered"
        assert (done["pages_sent"], done["pages_total"]) == (2, 2)
        assert [p["page"] for p in done["page_report"]] == [1, 2]
        assert done["failure_reason"] is None
        # Another user of the account sees nothing of it; the admin does.
        bobs = await bearer(sending, bob.id, "read")
        assert (await client.get(fax["url"], headers=bobs)).status_code == 404
        admins = await bearer(sending, world.a.admin.id, "read")
        assert (await client.get(fax["url"], headers=admins)).status_code == 200
        others = await bearer(sending, world.b.admin.id, "read")
        assert (await client.get(fax["url"], headers=others)).status_code == 404


async def test_a_fax_sent_by_email_is_found_by_its_id(sending: PortalDeps, world: World) -> None:
    alice = world.a.users[0]
    fax_id, _month = world.fax_of(world.a, alice)
    async with client_for(sending) as client:
        found = await client.get(
            f"/api/v1/faxes/{fax_id}", headers=await bearer(sending, alice.id, "read")
        )
        assert found.status_code == 200
        assert found.json()["id"] == fax_id
        assert found.json()["status"] in (
            "delivered",
            "partially_delivered",
            "received",
            "receive_failed",
            "failed",
        )
        stranger = await bearer(sending, world.b.users[0].id, "read")
        assert (await client.get(f"/api/v1/faxes/{fax_id}", headers=stranger)).status_code == 404


async def test_cancel_marks_the_fax_and_tells_the_transmitter(
    sending: PortalDeps, bus: Bus, store: Store, world: World
) -> None:
    alice = world.a.users[0]
    headers = await bearer(sending, alice.id, "send")
    async with (
        EventTap(bus, ("fax.outbound.cancel_requested",)) as tap,
        client_for(sending) as client,
    ):
        created = await post_fax(client, headers, world.pdf, "+12125550123")
        fax_id = created.json()["faxes"][0]["id"]
        cancelled = await client.post(f"/api/v1/faxes/{fax_id}/cancel", headers=headers)
        assert cancelled.status_code == 202
        assert cancelled.json() == {"id": fax_id, "status": "queued", "cancel_requested": True}
        message = await tap.get(10)
        assert isinstance(message, FaxCancelRequested)
        assert (message.fax_id, message.user_id) == (fax_id, alice.id)
        assert await Cancellations(store.db).requested_at(fax_id) is not None
        # A fax that is over cannot be cancelled.
        sent_id = next(f for f, (m, u) in world.a.faxes.items() if u == alice.id)
        over = await client.post(f"/api/v1/faxes/{sent_id}/cancel", headers=headers)
        assert over.status_code == 409


async def test_resend_is_a_new_fax_of_the_same_document(
    sending: PortalDeps, bus: Bus, world: World
) -> None:
    alice = world.a.users[0]
    headers = await bearer(sending, alice.id, "send")
    async with EventTap(bus, ("fax.outbound.submitted",)) as tap, client_for(sending) as client:
        created = await post_fax(client, headers, world.pdf, "+12125550123")
        fax_id = created.json()["faxes"][0]["id"]
        original = await tap.get(10)
        again = await client.post(f"/api/v1/faxes/{fax_id}/resend", headers=headers)
        assert again.status_code == 202, again.text
        new_id = again.json()["faxes"][0]["id"]
        assert new_id != fax_id
        assert again.json()["faxes"][0]["to"] == "+12125550123"
        resent = await tap.get(10)
    assert isinstance(original, FaxSubmitted)
    assert isinstance(resent, FaxSubmitted)
    assert resent.resend_of == fax_id
    assert resent.document == original.document
