"""End to end on this machine: IMAP APPEND of a 3-page PDF mail to ``FaxSent``.

The whole system runs as real processes (tests/e2e/stack.py: mail-poller, validator,
transmitter, inbound, notifier, history-writer, pstn-sim) on the local RabbitMQ,
FerretDB and Dovecot, on a fresh vhost, database and intake mailbox. pstn-sim is the
carrier, in T.38 mode, on the fast simulated line clock (``--pace``, default 10 times
real time); every mail goes to its own "receive" number (+1 212 555 02xx), so each
call is matched to its mail.

- Throughput: ``--faxes`` mails (default 100) appended at once; ``faxes_per_min`` =
  faxes / (last FaxSent - first APPEND). The burst must be long against one call (~4.5 s
  at pace 10, the last call's share of the window is pure latency): with 60 mails the
  window was ~13 s, a third of it the final call. ``burst_timeline`` shows where the
  window went. The services run with their default leases (the e2e stack shortens them
  for its failover tests).
- Dial latency: mails appended one every ``--interval`` seconds (below capacity), and
  for each the time from its APPEND to pstn-sim seeing the INVITE (``dial_p50_s``,
  ``dial_p99_s``).

Anchor, in the same run: the same number of already rendered 3-page faxes published
straight to the transmitter as OutboundFaxRequested (no mail, no validator), from
publish to the last FaxSent (``anchor_line_faxes_per_min``): what the line side alone
sustains. ``ratio_vs_anchor`` = faxes_per_min / anchor_line_faxes_per_min.

    uv run python benchmarks/e2e_throughput.py [--faxes 100] [--runs 3] [--pace 10] [--channels 100]

Writes benchmarks/results/e2e.json (targets: faxes_per_min >= 300, dial_p50_s <= 1,
dial_p99_s <= 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cpu import infra_cpu_s, machine_busy_s  # noqa: E402
from benchmarks.udp import receive_buffer_drops  # noqa: E402
from faxbox.demo.document import demo_pdf  # noqa: E402
from faxbox.shared.bus import Bus, EventTap  # noqa: E402
from faxbox.shared.contracts import FaxFailed, FaxSent, OutboundFaxRequested  # noqa: E402
from faxbox.shared.settings import BrokerSettings, MongoSettings  # noqa: E402
from faxbox.shared.store import Store  # noqa: E402
from tests import children  # noqa: E402, F401 - its children end with it
from tests.e2e.stack import ALICE, REALM, Mailbox, SmtpCapture, Stack  # noqa: E402
from tests.support import RabbitServer  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "e2e.json"
MTA_AUTHSERV_ID = "mx.bench.test"


def number(i: int) -> str:
    return f"+1212555{200 + i:04d}"


def mail_to(destination: str, pdf: bytes) -> EmailMessage:
    message = EmailMessage()
    # APPENDed straight into the intake mailbox: the proof is what the MTA in front of it
    # writes for a logged-in sender; the run trusts that id (sender_auth is required).
    message["Authentication-Results"] = f"{MTA_AUTHSERV_ID}; auth=pass smtp.auth={ALICE.email}"
    message["From"] = ALICE.email
    message["To"] = f"{destination}@{REALM}"
    message["Subject"] = "benchmark"
    message["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex[:8], domain="bench.test")
    message.set_content("benchmark fax\n")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="three.pdf")
    return message


class Outcomes:
    def __init__(self, tap: EventTap) -> None:
        self.tap = tap
        self.requested: dict[str, OutboundFaxRequested] = {}
        self.requested_at: dict[str, float] = {}
        self.done: dict[str, tuple[float, bool]] = {}

    async def pump(self) -> None:
        while True:
            try:
                event = await self.tap.get(3600)
            except TimeoutError:
                continue
            if isinstance(event, OutboundFaxRequested):
                self.requested[event.fax_id] = event
                self.requested_at.setdefault(event.fax_id, time.time())
            elif isinstance(event, FaxSent | FaxFailed):
                self.done.setdefault(event.fax_id, (time.time(), isinstance(event, FaxSent)))

    async def wait(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.done) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.done)} of {count} faxes finished")
            await asyncio.sleep(0.1)


async def one_run(args: argparse.Namespace, rabbit: RabbitServer, mongo_url: str) -> dict[str, Any]:
    vhost = rabbit.add_scratch_vhost("bench")
    db = f"bench_{uuid.uuid4().hex[:8]}"
    smtp = SmtpCapture()
    smtp.start()
    mailbox = Mailbox(
        os.environ.get("FAXBOX_IMAP_HOST", "127.0.0.1"),
        int(os.environ.get("FAXBOX_IMAP_PORT", "1143")),
        "bench@faxbox.test",
        os.environ.get("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test"),
    )
    await asyncio.to_thread(mailbox.empty)
    directory = Path(tempfile.mkdtemp(prefix="faxbox-e2e-bench-"))
    stack = Stack(
        amqp_url=rabbit.url_for_vhost(vhost),
        prefix="bench",
        mongo_url=mongo_url,
        mongo_db=db,
        mailbox=mailbox,
        smtp_port=smtp.port,
        directory=directory,
        pace=args.pace,
        extra_env={
            "FAXBOX_VALIDATOR_RENDER_CONCURRENCY": str(os.cpu_count() or 2),
            "FAXBOX_TRANSMITTER_MAX_CALLS": "200",
            "FAXBOX_INBOUND_MAX_CALLS": "200",
            "FAXBOX_PREFETCH": "200",
            # The services' default leases: the e2e stack shortens them so that its tests
            # see a killed worker replaced within seconds, which costs renewals per call.
            "FAXBOX_TRANSMITTER_LEASE_S": "60",
            "FAXBOX_NOTIFIER_LEASE_S": "120",
            "FAXBOX_MAIL_POLLER_LEASE_TTL_S": "10",
            "FAXBOX_MAIL_POLLER_LEASE_RENEW_S": "3",
            "FAXBOX_VALIDATOR_AUTHSERV_IDS": f'["{MTA_AUTHSERV_ID}"]',
            # A run sends 130 3-page faxes from one user: past the default daily caps
            # (200 pages a user), which would reject half of them.
            "FAXBOX_VALIDATOR_DAILY_PAGES_PER_USER": "0",
            "FAXBOX_VALIDATOR_DAILY_PAGES_PER_ACCOUNT": "0",
        },
    )
    store = await Store.connect(MongoSettings(mongo_url=mongo_url, mongo_db=db))
    bus = Bus(BrokerSettings(amqp_url=stack.amqp_url, exchange_prefix=stack.prefix))
    pdf = demo_pdf(3)
    try:
        await store.ensure_indexes()
        await stack.start_all()
        await stack.seed(store, channels=args.channels)
        await bus.connect()
        async with EventTap(bus) as tap:
            outcomes = Outcomes(tap)
            pump = asyncio.create_task(outcomes.pump())

            # Dial latency, at a rate below capacity.
            appended: dict[str, float] = {}
            for i in range(args.latency_faxes):
                destination = number(i)
                message = mail_to(destination, pdf)
                await asyncio.to_thread(mailbox.append, message)
                appended[destination] = time.time()
                await asyncio.sleep(args.interval)
            await outcomes.wait(args.latency_faxes, 300)
            dial: list[float] = []
            for call in stack.calls():
                if call["to"] in appended:
                    started = datetime.fromisoformat(call["started_at"]).timestamp()
                    dial.append(started - appended.pop(call["to"]))

            # Throughput: a burst.
            cpu_before = stack.cpu_seconds()
            harness_before = time.process_time()
            busy_before, idle_before = machine_busy_s()
            infra_before = infra_cpu_s()
            drops_before = receive_buffer_drops()
            first_sent_index = len(outcomes.done)
            t0 = time.time()
            messages = [mail_to(number(args.latency_faxes + i), pdf) for i in range(args.faxes)]
            first_requested_index = len(outcomes.requested_at)
            for message in messages:
                await asyncio.to_thread(mailbox.append, message)
            appended_s = time.time() - t0
            await outcomes.wait(first_sent_index + args.faxes, 600)
            burst = sorted(outcomes.done.values())[first_sent_index:]
            t_last = max(t for t, _ in burst)
            burst_numbers = {number(args.latency_faxes + i) for i in range(args.faxes)}
            burst_calls = [c for c in stack.calls() if c["to"] in burst_numbers]
            dialled = sorted(
                datetime.fromisoformat(c["started_at"]).timestamp() - t0 for c in burst_calls
            )
            call_s = [
                datetime.fromisoformat(c["ended_at"]).timestamp()
                - datetime.fromisoformat(c["started_at"]).timestamp()
                for c in burst_calls
                if c.get("ended_at")
            ]
            requested = sorted(list(outcomes.requested_at.values())[first_requested_index:])
            # Where the burst's time went: the pipeline's front (mail to fax request), the
            # dialling, and the calls themselves (a fixed share of a short burst).
            burst_timeline = {
                "appended_all_s": round(appended_s, 2),
                "last_requested_s": round(requested[-1] - t0, 2) if requested else None,
                "first_dial_s": round(dialled[0], 2) if dialled else None,
                "last_dial_s": round(dialled[-1], 2) if dialled else None,
                "call_p50_s": round(statistics.median(call_s), 2) if call_s else None,
                "last_sent_s": round(t_last - t0, 2),
                # Calls beyond one a fax: attempts that failed on the line (the machine
                # saturated, T.30's timers at 10x) and were dialled again.
                "redials": len(burst_calls) - len({c["to"] for c in burst_calls}),
                # Media datagrams the kernel dropped meanwhile (machine-wide): a reader
                # that fell behind its sockets, whose calls then fail on T.30's timers.
                "udp_receive_buffer_drops": receive_buffer_drops() - drops_before,
            }
            faxes_per_min = args.faxes / (t_last - t0) * 60
            failed = sum(1 for _, ok in burst if not ok)
            cpu_after = stack.cpu_seconds()
            harness_per_fax = (time.process_time() - harness_before) / args.faxes
            busy_after, idle_after = machine_busy_s()
            infra_after = infra_cpu_s()
            infra_per_fax = {
                name: round((infra_after[name] - infra_before.get(name, 0.0)) / args.faxes, 3)
                for name in infra_after
            }
            machine_busy = busy_after - busy_before
            machine_idle_share = (idle_after - idle_before) / (
                machine_busy + idle_after - idle_before
            )
            cpu_per_fax = {
                name: round((cpu_after[name] - cpu_before.get(name, 0.0)) / args.faxes, 3)
                for name in cpu_after
            }

            # Anchor: the same faxes again, straight to the transmitter.
            rendered = list(outcomes.requested.values())[: args.faxes]
            before = len(outcomes.done)
            anchor_drops_before = receive_buffer_drops()
            t1 = time.time()
            for i, request in enumerate(rendered):
                await bus.publish(
                    request.model_copy(
                        update={
                            "fax_id": f"anchor{i}_{uuid.uuid4().hex[:6]}",
                            "message_id": uuid.uuid4().hex,
                            "destination": number(1000 + i),
                        }
                    )
                )
            await outcomes.wait(before + len(rendered), 600)
            anchor_done = sorted(outcomes.done.values())[before:]
            anchor_per_min = len(rendered) / (max(t for t, _ in anchor_done) - t1) * 60
            anchor_numbers = {number(1000 + i) for i in range(len(rendered))}
            anchor_calls = [c for c in stack.calls() if c["to"] in anchor_numbers]
            anchor = {
                "redials": len(anchor_calls) - len({c["to"] for c in anchor_calls}),
                "failed": sum(1 for _, ok in anchor_done if not ok),
                "udp_receive_buffer_drops": receive_buffer_drops() - anchor_drops_before,
            }
            pump.cancel()
    finally:
        await bus.close()
        stack.stop_all()
        smtp.stop()
        await store.client.drop_database(db)
        await store.close()
        rabbit.delete_vhost(vhost)
    dial.sort()
    return {
        "faxes": args.faxes,
        "faxes_per_min": round(faxes_per_min, 1),
        "failed": failed,
        "anchor_line_faxes_per_min": round(anchor_per_min, 1),
        "anchor": anchor,
        "burst_timeline": burst_timeline,
        "dial_samples": len(dial),
        "dial_p50_s": round(statistics.median(dial), 3),
        "dial_p99_s": round(dial[min(len(dial) - 1, math.ceil(0.99 * len(dial)) - 1)], 3),
        "burst_cpu_s_per_fax": cpu_per_fax,
        # Everything on the machine during the burst: our services, RabbitMQ, FerretDB,
        # Dovecot (and whatever else ran).
        "burst_servers_cpu_s_per_fax": infra_per_fax,
        "burst_machine_cpu_s_per_fax": round(machine_busy / args.faxes, 3),
        "burst_machine_idle_share": round(machine_idle_share, 3),
        # This process: the mails' APPENDs, the event tap, the SMTP capture.
        "burst_harness_cpu_s_per_fax": round(harness_per_fax, 3),
        "logs": str(directory),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=100)
    parser.add_argument("--latency-faxes", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pace", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=100, help="pstn-sim carrier's cap")
    args = parser.parse_args()
    rabbit = RabbitServer.from_env()
    mongo_url = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
    runs = []
    for n in range(args.runs):
        result = await one_run(args, rabbit, mongo_url)
        print(f"run {n + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in runs)), 3)

    faxes_per_min = median("faxes_per_min")
    anchor = median("anchor_line_faxes_per_min")
    report = {
        "benchmark": "e2e",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "target": "faxes_per_min >= 300, dial_p50_s <= 1, dial_p99_s <= 3",
        "pace": args.pace,
        "carrier_channels": args.channels,
        "media": "t38",
        "pages_per_fax": 3,
        "faxes_per_min": faxes_per_min,
        "dial_p50_s": median("dial_p50_s"),
        "dial_p99_s": median("dial_p99_s"),
        "anchor": "anchor_line_faxes_per_min: the same rendered faxes published straight to "
        "the transmitter (no mail, no validator)",
        "anchor_line_faxes_per_min": anchor,
        "ratio_vs_anchor": round(faxes_per_min / anchor, 3) if anchor else None,
        "meets_target": faxes_per_min >= 300
        and median("dial_p50_s") <= 1
        and median("dial_p99_s") <= 3,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
