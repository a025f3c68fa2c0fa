"""The validator service against real RabbitMQ and FerretDB, with real rendering workers.

The service runs in this process through its own wiring (``service.service``); mails are
stored in GridFS and announced with ``MailReceived`` as the mail-poller does; its
decisions are read from the transmitter's and notifier's queues, declared in the test's
prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aio_pika.abc import AbstractIncomingMessage

from faxbox.fax.tiffcheck import check_tiff
from faxbox.shared.bus import CONSUMED, REASON_HEADER, Bus, decode
from faxbox.shared.contracts import (
    MailReceived,
    OutboundFaxRejected,
    OutboundFaxRequested,
    month_of,
)
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Account, Faxbox, Store, User
from faxbox.validator.adapters import DAILY_PAGES, DECISIONS
from faxbox.validator.service import Settings, service
from tests.unit.validator.mailkit import FAX_TO, REALM, gmail, pdf, tiff_mail

pytestmark = pytest.mark.integration

ALICE = "alice@example.com"
TRUSTED = "mx.acme.fax.test"
# What the receiving mail server writes on top of a mail from example.com it proved.
PROVEN = f"Authentication-Results: {TRUSTED}; dmarc=pass header.from=example.com\r\n".encode()


@pytest.fixture(scope="module")
async def seeded(store: Store) -> Faxbox:
    account = await store.create_account(Account(name="Acme", realm=REALM, daily_page_limit=1000))
    user = await store.create_user(
        User(account_id=account.id, email="Alice@Example.com", daily_page_limit=1000)
    )
    faxbox = await store.create_faxbox(
        Faxbox(
            account_id=account.id,
            owner_user_id=user.id,
            caller_id="+12125550100",
            identity="ACME FAX",
            resolution="standard",
        )
    )
    await store.add_account_number(account.id, "+12125550100")
    await store.assign_number(faxbox.id, "+12125550100")
    return await store.get_faxbox(faxbox.id)


@pytest.fixture
async def validator(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, seeded: Faxbox
) -> AsyncIterator[Bus]:
    """The running service, and a bus of the test's own with the downstream queues."""
    bus = Bus(broker_settings)
    await bus.connect()
    for downstream in ("transmitter", "notifier"):
        await bus.declare_service(downstream)
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        validator_render_concurrency=2,
        validator_render_timeout_s=60,
        validator_authserv_ids=(TRUSTED,),
    )
    try:
        async with service(Runtime("validator"), settings):
            yield bus
    finally:
        await bus.close()


async def mail_received(
    store: Store, raw: bytes, fax_id: str | None = None, *, proven: bool = True
) -> MailReceived:
    received_at = datetime.now(UTC)
    raw = PROVEN + raw if proven else raw
    ref = await store.documents.put(
        "intake", month_of(received_at), raw, filename="mail.eml", content_type="message/rfc822"
    )
    return MailReceived(
        fax_id=fax_id or f"fax_{uuid.uuid4().hex[:12]}",
        mailbox="fax@faxbox.test/INBOX",
        uid_validity=1,
        uid=1,
        raw=ref,
        received_at=received_at,
    )


async def take(bus: Bus, queue_name: str, within_s: float = 30.0) -> AbstractIncomingMessage:
    channel = await bus.connection.channel()
    try:
        queue = await channel.get_queue(queue_name)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is not None:
                return incoming
            await asyncio.sleep(0.05)
    finally:
        await channel.close()
    raise AssertionError(f"nothing arrived on {queue_name} within {within_s}s")


async def nothing_on(bus: Bus, queue_name: str) -> bool:
    channel = await bus.connection.channel()
    try:
        queue = await channel.get_queue(queue_name)
        return await queue.get(no_ack=True, fail=False) is None
    finally:
        await channel.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within_s}s")


async def test_mail_becomes_a_fax_request_with_a_checked_tiff(
    validator: Bus, store: Store, seeded: Faxbox, tmp_path: Path
) -> None:
    document = pdf(3)
    message = await mail_received(store, gmail(ALICE, [("contract.pdf", document)]))
    await validator.publish(message)

    incoming = await take(validator, validator.topology.queue("transmitter"))
    request = decode(incoming)
    assert isinstance(request, OutboundFaxRequested)
    assert request.fax_id == message.fax_id
    assert (request.account_id, request.faxbox_id) == (seeded.account_id, seeded.id)
    assert request.month == month_of(message.received_at)
    assert request.destination == "+12125551234"
    assert request.pages == 3
    assert request.settings.caller_id == "+12125550100"
    assert request.settings.identity == "ACME FAX"
    assert request.settings.resolution == "standard"

    assert await store.documents.get(request.original) == document
    path = tmp_path / "fax.tif"
    path.write_bytes(await store.documents.get(request.fax_tiff))
    checked = check_tiff(path)
    assert len(checked.pages) == 3
    assert {p.resolution for p in checked.pages} == {"standard"}


async def test_multipage_tiff_is_accepted(validator: Bus, store: Store, tmp_path: Path) -> None:
    from tests.unit.validator.mailkit import tiff

    message = await mail_received(store, tiff_mail(ALICE, tiff(2)))
    await validator.publish(message)
    request = decode(await take(validator, validator.topology.queue("transmitter")))
    assert isinstance(request, OutboundFaxRequested)
    path = tmp_path / "fax.tif"
    path.write_bytes(await store.documents.get(request.fax_tiff))
    assert len(check_tiff(path).pages) == 2


async def test_problems_of_a_known_sender_go_to_the_notifier(validator: Bus, store: Store) -> None:
    message = await mail_received(
        store,
        gmail(
            '"Alice" <ALICE@example.com>',
            [("locked.pdf", pdf(password="pw"))],
            to=f"fax-me@{REALM}",
        ),
    )
    await validator.publish(message)
    rejected = decode(await take(validator, validator.topology.queue("notifier")))
    assert isinstance(rejected, OutboundFaxRejected)
    assert [r.code.value for r in rejected.reasons] == ["invalid_number", "encrypted_pdf"]
    assert rejected.sender_email == ALICE
    assert rejected.raw == message.raw
    assert await nothing_on(validator, validator.topology.queue("transmitter"))


async def test_an_auto_submitted_original_gets_no_answer(validator: Bus, store: Store) -> None:
    # (Moved from the notifier, which no longer reads the original mail.) An auto-reply
    # with the same problems as a person's mail: only the person's gets a rejection.
    def locked_pdf(headers: dict[str, str] | None = None) -> bytes:
        locked = [("locked.pdf", pdf(password="pw"))]
        return gmail(ALICE, locked, to=f"fax-me@{REALM}", headers=headers)

    acked = CONSUMED.labels(validator.topology.queue("validator"), "MailReceived", "acked")
    before = acked._value.get()
    auto = await mail_received(store, locked_pdf(headers={"Auto-Submitted": "auto-replied"}))
    person = await mail_received(store, locked_pdf())
    await validator.publish(auto)
    await validator.publish(person)
    rejected = decode(await take(validator, validator.topology.queue("notifier")))
    assert isinstance(rejected, OutboundFaxRejected)
    assert rejected.fax_id == person.fax_id
    await eventually(lambda: acked._value.get() >= before + 2, 30)  # both decided
    assert await nothing_on(validator, validator.topology.queue("notifier"))
    assert await nothing_on(validator, validator.topology.queue("transmitter"))


async def test_an_unproven_sender_is_refused_and_the_owner_told(
    validator: Bus, store: Store, seeded: Faxbox
) -> None:
    """A From anyone could have written: refused, the notice for the faxbox's owner."""
    forged = f"Authentication-Results: {TRUSTED}; dmarc=fail header.from=example.com\r\n"
    below = f"Authentication-Results: {TRUSTED}; dmarc=pass header.from=example.com\r\n"
    raw = (forged + below).encode() + gmail(ALICE, [("x.pdf", pdf())])
    message = await mail_received(store, raw, proven=False)
    await validator.publish(message)
    rejected = decode(await take(validator, validator.topology.queue("notifier")))
    assert isinstance(rejected, OutboundFaxRejected)
    assert [r.code.value for r in rejected.reasons] == ["sender_not_authenticated"]
    assert rejected.user_id == seeded.owner_user_id  # the notifier mails the owner's address
    assert "dmarc=fail" in rejected.reasons[0].message
    assert await nothing_on(validator, validator.topology.queue("transmitter"))


async def test_with_no_trusted_server_the_service_says_so_at_start(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    seeded: Faxbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        **broker_settings.model_dump(), **mongo_settings.model_dump(), validator_authserv_ids=()
    )
    with caplog.at_level("WARNING", logger="faxbox.validator.trust"):
        async with service(Runtime("validator"), settings):
            pass
    assert any("FAXBOX_VALIDATOR_AUTHSERV_IDS is empty" in r.message for r in caplog.records)


async def test_unknown_sender_lands_in_the_dead_letter_queue_with_the_reason(
    validator: Bus, store: Store
) -> None:
    message = await mail_received(store, gmail("mallory@evil.example", [("x.pdf", pdf())]))
    await validator.publish(message)
    dead = await take(validator, validator.topology.dead_letter_queue("validator"))
    assert dead.correlation_id == message.fax_id
    reason = str((dead.headers or {})[REASON_HEADER])
    assert reason.startswith("unknown_sender")
    assert "mallory@evil.example" in reason
    assert await nothing_on(validator, validator.topology.queue("notifier"))


async def test_redelivered_mail_is_decided_once(
    validator: Bus, store: Store, seeded: Faxbox
) -> None:
    message = await mail_received(store, gmail(ALICE, [("once.pdf", pdf(2))], to=FAX_TO))
    acked = CONSUMED.labels(validator.topology.queue("validator"), "MailReceived", "acked")
    before = acked._value.get()

    await validator.publish(message)
    first = decode(await take(validator, validator.topology.queue("transmitter")))
    await validator.publish(message)  # the same MailReceived again, as after a crash
    await eventually(lambda: acked._value.get() >= before + 2, 30)

    assert await nothing_on(validator, validator.topology.queue("transmitter"))
    assert isinstance(first, OutboundFaxRequested)
    files = store.db[f"documents_{seeded.account_id}_{first.month}.files"]
    stored = await files.count_documents({"metadata.fax_id": message.fax_id})
    assert stored == 2  # the original and the fax TIFF, once
    assert await store.db[DECISIONS].count_documents({"_id": message.fax_id}) == 1
    counted = await store.db[DAILY_PAGES].find({"fax_ids": message.fax_id}, {"pages": 1}).to_list()
    assert len(counted) == 2  # the user's and the account's counter, each once


async def test_service_process_decides_and_stops_on_sigterm(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    seeded: Faxbox,
    tmp_path: Path,
) -> None:
    """``python -m faxbox.validator`` as deployed: settings from the environment."""
    bus = Bus(broker_settings)
    await bus.connect()
    # Declared here too, so the mail is queued even before the process is up.
    for name in ("validator", "transmitter"):
        await bus.declare_service(name)
    env = os.environ | {
        "FAXBOX_AMQP_URL": broker_settings.amqp_url,
        "FAXBOX_EXCHANGE_PREFIX": broker_settings.exchange_prefix,
        "FAXBOX_MONGO_URL": mongo_settings.mongo_url,
        "FAXBOX_MONGO_DB": mongo_settings.mongo_db,
        "FAXBOX_VALIDATOR_AUTHSERV_IDS": f'["{TRUSTED}"]',
    }
    log_path = tmp_path / "validator.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "faxbox.validator", env=env, stderr=log_file
        )
        try:
            message = await mail_received(store, gmail(ALICE, [("p.pdf", pdf(2))]))
            await bus.publish(message)
            request = decode(await take(bus, bus.topology.queue("transmitter"), 120))
            assert isinstance(request, OutboundFaxRequested)
            assert request.fax_id == message.fax_id
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        except BaseException as exc:
            # The service's own log says why; pytest's report alone would not.
            exc.add_note(f"validator log:\n{log_path.read_text(errors='replace')[-4000:]}")
            raise
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await bus.close()
    text = log_path.read_text(errors="replace")
    decided = [
        entry
        for line in text.splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("msg") == "decided accepted"
    ]
    assert decided, text[-4000:]
    assert decided[0]["fax_id"] == message.fax_id
