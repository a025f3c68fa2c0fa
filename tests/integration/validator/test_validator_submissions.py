"""Faxes submitted without email, decided by the validator like an email: real RabbitMQ,
FerretDB and rendering workers, the service running through its own wiring."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbox.fax.tiffcheck import check_tiff
from faxbox.shared.bus import REASON_HEADER, Bus, decode
from faxbox.shared.contracts import (
    DocumentRef,
    FaxSubmitted,
    OutboundFaxRejected,
    OutboundFaxRequested,
    month_of,
)
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Account, Faxbox, Role, Store, User
from faxbox.validator.service import Settings, service
from tests.integration.validator.test_validator_service import nothing_on, take
from tests.unit.validator.mailkit import pdf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def tenant(store: Store) -> tuple[Account, Faxbox, User, User]:
    account = await store.create_account(
        Account(
            name="Submitters",
            realm=f"sub-{uuid.uuid4().hex[:6]}.example",
            allowed_countries=["US", "GB"],
        )
    )
    owner = await store.create_user(
        User(account_id=account.id, email=f"owner-{uuid.uuid4().hex[:6]}@example.com")
    )
    stranger = await store.create_user(
        User(
            account_id=account.id, email=f"other-{uuid.uuid4().hex[:6]}@example.com", role=Role.USER
        )
    )
    box = await store.create_faxbox(
        Faxbox(
            account_id=account.id,
            owner_user_id=owner.id,
            caller_id="+12125550100",
            header_format="%%s|page %%p of %%t",
            max_recipients=3,
        )
    )
    return account, box, owner, stranger


@pytest.fixture
async def validator(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    for downstream in ("transmitter", "notifier"):
        await bus.declare_service(downstream)
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        validator_render_concurrency=2,
        validator_render_timeout_s=60,
    )
    try:
        async with service(Runtime("validator"), settings):
            yield bus
    finally:
        await bus.close()


async def submitted(
    store: Store,
    account: Account,
    box: Faxbox,
    user: User,
    numbers: tuple[str, ...],
    document: bytes,
    content_type: str = "application/pdf",
) -> FaxSubmitted:
    now = datetime.now(UTC)
    fax_id = f"fax_{uuid.uuid4().hex[:12]}"
    ref: DocumentRef = await store.documents.put(
        account.id, month_of(now), document, filename="upload.pdf", content_type=content_type
    )
    return FaxSubmitted(
        fax_id=fax_id,
        account_id=account.id,
        month=month_of(now),
        user_id=user.id,
        faxbox_id=box.id,
        numbers=numbers,
        document=ref,
        channel="api",
    )


async def test_a_submission_becomes_one_request_per_number_with_the_portals_ids(
    validator: Bus, store: Store, tenant: tuple[Account, Faxbox, User, User], tmp_path: Path
) -> None:
    account, box, owner, _ = tenant
    message = await submitted(store, account, box, owner, ("+12125550123", "+442079460958"), pdf(2))
    await validator.publish(message)
    queue = validator.topology.queue("transmitter")
    requests: list[OutboundFaxRequested] = []
    for _ in range(2):
        request = decode(await take(validator, queue))
        assert isinstance(request, OutboundFaxRequested)
        requests.append(request)
    requests.sort(key=lambda r: r.fax_id)
    assert [(r.fax_id, r.destination) for r in requests] == [
        (message.fax_id, "+12125550123"),
        (f"{message.fax_id}-2", "+442079460958"),
    ]
    request = requests[0]
    assert request.original == message.document  # the portal's upload, this month
    assert request.settings.header_format == "%%s|page %%p of %%t"
    assert request.user_id == owner.id
    assert request.sender_email == owner.email
    assert request.pages == 2
    path = tmp_path / "fax.tif"
    path.write_bytes(await store.documents.get(request.fax_tiff))
    assert len(check_tiff(path).pages) == 2
    # The same submission again (a redelivery, or the portal republishing): decided before,
    # published before, so nothing more.
    await validator.publish(message)
    await asyncio.sleep(2)
    assert await nothing_on(validator, queue)


@pytest.mark.parametrize(
    ("numbers", "document", "codes"),
    [
        (("+19005551234",), pdf(1), ["blocked_number"]),
        (("+33142685300",), pdf(1), ["country_not_allowed"]),
        (("+12125550123",), pdf(1, password="pw"), ["encrypted_pdf"]),
        (("+12125550123",), b"%PDF-1.4 broken", ["unreadable_document"]),
        (
            ("+12125550121", "+12125550122", "+12125550123", "+12125550124"),
            pdf(1),
            ["too_many_recipients"],
        ),
    ],
)
async def test_what_an_email_could_not_do_a_submission_cannot_either(
    validator: Bus,
    store: Store,
    tenant: tuple[Account, Faxbox, User, User],
    numbers: tuple[str, ...],
    document: bytes,
    codes: list[str],
) -> None:
    account, box, owner, _ = tenant
    message = await submitted(store, account, box, owner, numbers, document)
    await validator.publish(message)
    rejected = decode(await take(validator, validator.topology.queue("notifier")))
    assert isinstance(rejected, OutboundFaxRejected)
    assert [r.code.value for r in rejected.reasons] == codes
    assert rejected.fax_id == message.fax_id
    assert rejected.fax_ids == tuple(
        message.fax_id if i == 0 else f"{message.fax_id}-{i + 1}" for i in range(len(numbers))
    )
    assert await nothing_on(validator, validator.topology.queue("transmitter"))


async def test_a_disabled_faxbox_rejects_and_a_foreign_user_is_dead_lettered(
    validator: Bus, store: Store, tenant: tuple[Account, Faxbox, User, User]
) -> None:
    account, box, owner, stranger = tenant
    foreign = await submitted(store, account, box, stranger, ("+12125550123",), pdf(1))
    await validator.publish(foreign)
    dead = await take(validator, validator.topology.dead_letter_queue("validator"))
    assert str((dead.headers or {})[REASON_HEADER]).startswith("not_allowed")

    await store.disable_faxbox(box.id)
    try:
        message = await submitted(store, account, box, owner, ("+12125550123",), pdf(1))
        await validator.publish(message)
        rejected = decode(await take(validator, validator.topology.queue("notifier")))
        assert isinstance(rejected, OutboundFaxRejected)
        assert [r.code.value for r in rejected.reasons] == ["faxbox_disabled"]
    finally:
        await store.enable_faxbox(box.id)


async def test_a_resend_whose_document_was_removed_says_so(
    validator: Bus, store: Store, tenant: tuple[Account, Faxbox, User, User]
) -> None:
    account, box, owner, _ = tenant
    message = await submitted(store, account, box, owner, ("+12125550123",), pdf(1))
    await store.documents.delete(message.document)
    await validator.publish(message.model_copy(update={"resend_of": "fax_old"}))
    rejected = decode(await take(validator, validator.topology.queue("notifier")))
    assert isinstance(rejected, OutboundFaxRejected)
    assert [r.code.value for r in rejected.reasons] == ["document_unavailable"]
