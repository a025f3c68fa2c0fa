"""One mail to several fax numbers, through the local SMTP relay, the real Dovecot,
RabbitMQ and FerretDB, the mail-poller and the validator: one fax per number, once.

The relay is the project's own (deploy/local/mailrelay.py), started on a port of this
test's own with a catch-all for this test's realm, delivering into the mail-poller's
test user's INBOX over Dovecot's LMTP, as every MTA delivers to a catch-all: one copy
per envelope recipient, each with its X-Original-To. The test moves its own copies into
a folder of its own (other suites use that INBOX too), which the poller watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.ledger import COLLECTION as LEDGER
from faxbox.mail_poller.service import Settings as PollerSettings
from faxbox.mail_poller.service import service as poller_service
from faxbox.shared.bus import Bus, decode
from faxbox.shared.contracts import Message, OutboundFaxRequested
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Account, Faxbox, Store, User
from faxbox.validator.adapters import CLAIMS
from faxbox.validator.service import Settings as ValidatorSettings
from faxbox.validator.service import service as validator_service
from tests.integration.mail_poller.mail_poller_support import (
    Imap,
    eventually,
    leaving_folders,
    own_folder,
    poller_user,
)
from tests.relay import AUTHSERV_ID, LocalRelay
from tests.support import ImapServer
from tests.unit.validator.mailkit import pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ALICE = "alice@faxbox.test"  # a Dovecot user: she logs in to the relay to send
NUMBERS = ("+12125550147", "+12125550148", "+12125550149")


@pytest.fixture(scope="module")
def realm() -> str:
    return f"r{uuid.uuid4().hex[:8]}.fax.test"


@pytest.fixture
def imap(imap_server: ImapServer) -> Imap:
    return Imap(imap_server, poller_user(imap_server))


@pytest.fixture
async def folder(imap: Imap) -> AsyncIterator[str]:
    async with own_folder(imap) as name:
        yield name


@pytest.fixture
def relay(tmp_path: Path, realm: str, imap: Imap) -> Iterator[LocalRelay]:
    """This checkout's relay on ports of its own: ``realm`` is a catch-all for ``imap.user``."""
    relay = LocalRelay(tmp_path / "relay", catch_all={realm: imap.user}).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
async def seeded(store: Store, realm: str) -> Faxbox:
    account = await store.create_account(Account(name="Recipients", realm=realm))
    user = await store.create_user(User(account_id=account.id, email=ALICE))
    return await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=user.id))


@contextlib.asynccontextmanager
async def intake(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
) -> AsyncIterator[None]:
    """The mail-poller on ``folder`` and the validator, both in this process."""
    mailbox = MailboxConfig.model_validate(
        {
            "host": imap_server.host,
            "port": imap_server.port,
            "security": "none",
            "username": imap.user,
            "password": imap_server.password,
            "folder": folder,
            **leaving_folders(folder),
            "command_timeout_s": 10,
        }
    )
    common = {**broker_settings.model_dump(), **mongo_settings.model_dump()}
    poller = PollerSettings(**common, mail_poller_mailboxes=(mailbox,), mail_poller_lease_ttl_s=5)
    validator = ValidatorSettings(
        **common, validator_render_concurrency=1, validator_authserv_ids=(AUTHSERV_ID,)
    )
    async with (
        validator_service(Runtime("validator"), validator),
        poller_service(Runtime("mail-poller"), poller),
    ):
        yield


def one_mail(realm: str, token: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = ", ".join(f"{n}@{realm}" for n in NUMBERS[:2]) + ", Bob <bob@example.com>"
    message["Cc"] = f"{NUMBERS[2].removeprefix('+1')}@{realm}"
    message["Subject"] = "three faxes"
    message["Message-ID"] = f"<{token}@client.test>"
    message.set_content("Please fax.\n")
    message.add_attachment(pdf(1), maintype="application", subtype="pdf", filename="a.pdf")
    return message


def send(relay: LocalRelay, message: EmailMessage, recipients: list[str]) -> None:
    password = os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test")
    relay.submit(message, ALICE, password, recipients=recipients)


async def requests_on(bus: Bus, queue_name: str) -> list[Message]:
    """Every message on the queue right now (taken off it)."""
    taken: list[Message] = []
    channel = await bus.connection.channel()
    try:
        queue = await channel.get_queue(queue_name)
        while (incoming := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(decode(incoming))
    finally:
        await channel.close()
    return taken


async def test_one_mail_to_three_numbers_is_three_faxes_once(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    relay: LocalRelay,
    realm: str,
    seeded: Faxbox,
    store: Store,
) -> None:
    bus = Bus(broker_settings)
    await bus.connect()
    for downstream in ("transmitter", "notifier"):
        await bus.declare_service(downstream)
    transmitter = bus.topology.queue("transmitter")
    token = uuid.uuid4().hex
    message = one_mail(realm, token)
    # The envelope: each number once (the Cc one as written), and the person in To.
    envelope = [f"{NUMBERS[0]}@{realm}", f"{NUMBERS[1]}@{realm}", message["Cc"], "bob@example.com"]
    requested: list[Message] = []

    async def collect(count: int) -> bool:
        requested.extend(await requests_on(bus, transmitter))
        return len(requested) >= count

    async def copies_in_folder(count: int) -> bool:
        await imap.move_matching("INBOX", "Message-ID", token, folder)
        return (
            len(await imap.messages(folder)) + len(await imap.messages(f"{folder}-processed"))
            >= count
        )

    try:
        async with intake(broker_settings, mongo_settings, imap_server, imap, folder):
            await asyncio.to_thread(send, relay, message, envelope)
            await eventually(lambda: copies_in_folder(3), 20, "three copies delivered")
            copies = await imap.messages(folder) or await imap.messages(f"{folder}-processed")
            assert copies
            assert b"X-Original-To: " in copies[0]
            assert f"Delivered-To: {imap.user}".encode() in copies[0]

            await eventually(lambda: collect(3), 60, "three fax requests")
            faxes = [m for m in requested if isinstance(m, OutboundFaxRequested)]
            assert sorted(f.destination for f in faxes) == sorted(NUMBERS)
            assert len({f.fax_id for f in faxes}) == 3
            assert {f.source_message_id for f in faxes} == {f"<{token}@client.test>"}

            # The same mail once more (the same Message-ID): the relay delivers three copies
            # again, and a copy for all lands beside them, as a second intake path would.
            await asyncio.to_thread(send, relay, message, envelope)
            await eventually(lambda: copies_in_folder(6), 20, "three more copies delivered")
            # That path's MTA proves the sender too (here: as our relay writes it).
            proof = f"Authentication-Results: {AUTHSERV_ID}; auth=pass smtp.auth={ALICE}\r\n"
            await imap.append(folder, proof.encode() + message.as_bytes())

            async def all_processed() -> bool:
                return (
                    not await imap.messages(folder)
                    and len(await imap.messages(f"{folder}-processed")) == 7
                )

            await eventually(all_processed, 30, "every copy taken")
            await asyncio.sleep(2)  # time for a request to show up, if there were one
            await collect(0)
            assert len(requested) == 3, requested
            # Four mails published (three envelope copies, one copy for all), three
            # duplicates; the copy for all found every number claimed by the others.
            mailbox = f"{imap.user}@{imap_server.host}:{imap_server.port}/{folder}"
            entries = [doc async for doc in store.db[LEDGER].find({"mailbox": mailbox})]
            assert sorted(e["recipient"] or "all" for e in entries if not e["duplicate_of"]) == [
                *sorted(e.lower() for e in envelope[:3]),
                "all",
            ]
            assert len(entries) == 7
            claims = await store.db[CLAIMS].count_documents({})
            assert claims == 3
    finally:
        await bus.close()
