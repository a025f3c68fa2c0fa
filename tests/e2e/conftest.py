"""One whole system per e2e test module: see tests/e2e/stack.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from faxbox.demo.tenant import Seeded
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from tests.e2e.stack import REALM, SERVICES, Mailbox, SmtpCapture, Stack
from tests.relay import LocalRelay
from tests.support import ImapServer, RabbitServer

INTAKE_USER = "e2e@faxbox.test"


@pytest.fixture(scope="module")
def relay(
    imap_server: ImapServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRelay]:
    """This checkout's mail relay on ports of its own: the e2e realm to the intake mailbox,
    faxbox.test to its users' inboxes, submission with AUTH checked by Dovecot."""
    relay = LocalRelay(tmp_path_factory.mktemp("relay"), catch_all={REALM: INTAKE_USER})
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpCapture]:
    capture = SmtpCapture()
    capture.start()
    yield capture
    capture.stop()


@pytest.fixture(scope="module")
def notifier_smtp_port(smtp: SmtpCapture) -> int:
    """Where the notifier sends: the test's capture; a module may point it elsewhere."""
    return smtp.port


@pytest.fixture(scope="module")
def intake(imap_server: ImapServer) -> Mailbox:
    mailbox = Mailbox(imap_server.host, imap_server.port, INTAKE_USER, imap_server.password)
    mailbox.empty()
    return mailbox


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    """The services a module runs; a module that needs the portal overrides this."""
    return SERVICES


@pytest.fixture(scope="module")
async def stack(
    stack_services: tuple[str, ...],
    rabbit: RabbitServer,
    vhost: str,
    mongo_settings: MongoSettings,
    store: Store,
    intake: Mailbox,
    notifier_smtp_port: int,
    relay: LocalRelay,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    directory: Path = tmp_path_factory.mktemp("stack")
    system = Stack(
        amqp_url=rabbit.url_for_vhost(vhost),
        prefix=f"e{uuid.uuid4().hex[:8]}",
        mongo_url=mongo_settings.mongo_url,
        mongo_db=mongo_settings.mongo_db,
        mailbox=intake,
        smtp_port=notifier_smtp_port,
        directory=directory,
        relay=relay,
        services=stack_services,
    )
    try:
        await system.start_all()
        yield system
    finally:
        system.stop_all()
        # Kept with the other test artifacts when a test failed: the services' logs.
        print(f"e2e service logs in {directory}")


@pytest.fixture(scope="module")
async def tenant(stack: Stack, store: Store) -> Seeded:
    return await stack.seed(store)
