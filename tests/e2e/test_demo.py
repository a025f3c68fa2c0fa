"""`faxbox demo` against a whole system: the mail goes by SMTP through the local relay.

The demo submits its mail to the relay's submission port, logged in as alice (a Dovecot
user), so the relay stamps the proof the validator requires; the relay's catch-all for
the e2e realm drops it into the stack's intake mailbox. The stack's notifier sends
through the same relay into Dovecot, so the demo finds both users' mails in their real
IMAP inboxes. The relay is this checkout's (tests/relay.py), on ports of its own.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from faxbox.demo.run import DemoSettings, run_demo
from faxbox.demo.tenant import DemoTenant, seed
from faxbox.shared.store import RetryPolicy, Store
from tests.e2e.stack import ALICE, BOB, REALM, Stack
from tests.relay import LocalRelay
from tests.support import ImapServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def notifier_smtp_port(relay: LocalRelay) -> int:
    return relay.port


async def test_the_demo_shows_every_step_and_succeeds(
    stack: Stack, store: Store, imap_server: ImapServer, relay: LocalRelay, tmp_path: Path
) -> None:
    tenant = DemoTenant(
        realm=REALM,
        account_name="E2E demo",
        users=(ALICE, BOB),
        carrier_port=stack.pstn_sip_port,
        retry=RetryPolicy(attempts=3, delays_s=[1, 2]),
    )
    settings = DemoSettings(
        amqp_url=stack.amqp_url,
        exchange_prefix=stack.prefix,
        mongo_url=stack.mongo_url,
        mongo_db=stack.mongo_db,
        local_submission_port=relay.submission_port,
        imap_host=imap_server.host,
        imap_port=imap_server.port,
        pstn_sim_url=stack.pstn_url,
        demo_timeout_s=120,
        demo_output_dir=tmp_path,
    )
    await seed(store, tenant)
    out = io.StringIO()
    code = await run_demo(settings, tenant, out)
    shown = out.getvalue()
    assert code == 0, shown
    for step in (
        f"emailed faxbox-demo.pdf (3 pages) from {ALICE.email} to {BOB.number}@{REALM}",
        "accepted as fax",
        f"dialling {BOB.number}",
        "sent: 3 of 3 pages",
        f"received by {BOB.email}'s faxbox: 3 pages from {ALICE.number}",
        f"{ALICE.email} got 'Fax to {BOB.number} sent (3 pages)'",
        f"{BOB.email} got 'Fax from {ALICE.number} (3 pages)'",
        f"history of {ALICE.email}: outbound fax",
        f"history of {BOB.email}: inbound fax",
    ):
        assert step in shown, f"missing step {step!r} in:\n{shown}"
    (saved,) = saved_pdfs(tmp_path)
    assert saved.startswith(b"%PDF")


def saved_pdfs(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in directory.glob("*.pdf")]
