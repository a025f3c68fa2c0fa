"""``faxbox demo``: user A emails a PDF to user B's number; watch it become a fax and a mail.

Everything is real: the mail goes by SMTP to the local mail server, which drops it in the
fax realm's IMAP mailbox; the running services pick it up, render it, dial pstn-sim,
which forwards the call to our inbound receiver as B's number; the notifier mails both
users. This command only sends the first mail and watches: the events on the bus (a
private tap queue), pstn-sim's call list, the users' IMAP inboxes and the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import imaplib
import itertools
import json
import smtplib
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import make_msgid
from io import BytesIO
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pydantic import Field, SecretStr
from pypdf import PdfReader

from faxbox.demo.document import demo_pdf
from faxbox.demo.tenant import DemoTenant, DemoUser
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import (
    FaxAttemptFailed,
    FaxFailed,
    FaxSent,
    InboundFaxFailed,
    InboundFaxReceived,
    Message,
    NotificationKind,
    NotificationSent,
    OutboundFaxRejected,
    OutboundFaxRequested,
)
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import HistoryRecord, NotFound, Store

M = TypeVar("M", bound=Message)


class DemoSettings(BrokerSettings, MongoSettings):
    local_smtp_host: str = "127.0.0.1"
    # The relay's submission port: the demo logs in as the sender (a Dovecot user, with
    # the IMAP test password), and the relay stamps the proof the validator requires.
    local_submission_port: int = 2587
    imap_host: str = "127.0.0.1"
    imap_port: int = 1143
    imap_test_password: SecretStr = SecretStr("faxbox-test")
    pstn_sim_url: str = "http://127.0.0.1:8070"
    portal_url: str = "http://127.0.0.1:8080"
    demo_timeout_s: float = Field(default=300.0, gt=0)
    demo_output_dir: Path = Path("var/demo")


class DemoFailed(Exception):
    pass


class Progress:
    """One line per step with the time since the start; a spinner while waiting on a TTY."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started = time.monotonic()
        self.tty = out.isatty()

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f}s"

    def step(self, text: str, mark: str = "✓") -> None:
        self._clear()
        print(f"  {self._elapsed()}  {mark} {text}", file=self.out, flush=True)

    def _clear(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.out, flush=True)

    async def spin(self, label: str) -> None:
        if not self.tty:
            return
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            print(
                f"\r\033[K  {self._elapsed()}  {frame} {label}", end="", file=self.out, flush=True
            )
            await asyncio.sleep(0.1)


class Events:
    """Everything the tap saw, so several steps can wait at once, and for earlier events."""

    def __init__(self, tap: EventTap) -> None:
        self.tap = tap
        self.seen: list[Message] = []
        self._arrived = asyncio.Condition()
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Events:
        self._pump = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def _read(self) -> None:
        while True:
            try:
                event = await self.tap.get(3600)
            except TimeoutError:
                continue
            async with self._arrived:
                self.seen.append(event)
                self._arrived.notify_all()

    async def expect(self, kind: type[M], match: Callable[[M], bool], deadline: float) -> M:
        checked = 0
        async with self._arrived:
            while True:
                for event in self.seen[checked:]:
                    if isinstance(event, kind) and match(event):
                        return event
                checked = len(self.seen)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)


async def run_demo(
    settings: DemoSettings, tenant: DemoTenant | None = None, out: TextIO = sys.stdout
) -> int:
    tenant = tenant or DemoTenant()
    progress = Progress(out)
    try:
        await _demo(settings, tenant, progress)
    except DemoFailed as exc:
        progress.step(str(exc), mark="✗")
        return 1
    return 0


async def _demo(settings: DemoSettings, tenant: DemoTenant, progress: Progress) -> None:
    sender, receiver = tenant.users[0], tenant.users[1]
    deadline = time.monotonic() + settings.demo_timeout_s
    print(
        f"Faxbox demo: {sender.email} faxes a 3-page PDF to {receiver.email}'s number "
        f"{receiver.number}\n",
        file=progress.out,
    )
    store = await Store.connect(settings)
    bus = Bus(settings)
    try:
        await _check_seeded(store, tenant)
        await bus.connect()
        async with EventTap(bus) as tap, Events(tap) as events:
            message_id = await _send_mail(settings, tenant, sender, receiver, progress)
            await _follow(settings, store, events, sender, receiver, message_id, deadline, progress)
    finally:
        await bus.close()
        await store.close()


async def _check_seeded(store: Store, tenant: DemoTenant) -> None:
    try:
        account = await store.get_account_by_realm(tenant.realm)
    except NotFound:
        raise DemoFailed(
            f"no account with realm {tenant.realm}: start the stack with `bash deploy/local/run` "
            "(it seeds the demo tenant), or run `faxbox demo seed`"
        ) from None
    for user in tenant.users:
        found = await store.find_user_by_email(user.email)
        if found is None or found.account_id != account.id:
            raise DemoFailed(f"demo user {user.email} is missing: run `faxbox demo seed`")


async def _send_mail(
    settings: DemoSettings,
    tenant: DemoTenant,
    sender: DemoUser,
    receiver: DemoUser,
    progress: Progress,
) -> str:
    to = f"{receiver.number}@{tenant.realm}"
    mail = EmailMessage()
    mail["From"] = sender.email
    mail["To"] = to
    mail["Subject"] = f"Demo fax for {receiver.email}"
    mail["Message-ID"] = message_id = make_msgid(idstring="demo", domain="faxbox.test")
    mail.set_content("Please fax the attached document. (Subject and body are not faxed.)\n")
    mail.add_attachment(
        demo_pdf(3), maintype="application", subtype="pdf", filename="faxbox-demo.pdf"
    )

    host, port = settings.local_smtp_host, settings.local_submission_port

    def send() -> None:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.login(sender.email, settings.imap_test_password.get_secret_value())
            smtp.send_message(mail)

    try:
        await asyncio.to_thread(send)
    except (OSError, smtplib.SMTPException) as exc:
        raise DemoFailed(
            f"could not send the email through SMTP submission {host}:{port} as "
            f"{sender.email} ({exc}); is `bash deploy/local/up` done?"
        ) from None
    progress.step(
        f"emailed faxbox-demo.pdf (3 pages) from {sender.email} to {to} "
        f"(logged in to the mail server as {sender.email})"
    )
    return message_id


async def _wait(progress: Progress, label: str, awaitable: Any, what: str) -> Any:
    spinner = asyncio.create_task(progress.spin(label))
    try:
        return await awaitable
    except TimeoutError:
        raise DemoFailed(f"timed out waiting for {what}") from None
    finally:
        spinner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spinner


async def _follow(
    settings: DemoSettings,
    store: Store,
    events: Events,
    sender: DemoUser,
    receiver: DemoUser,
    message_id: str,
    deadline: float,
    progress: Progress,
) -> None:
    def ours(e: OutboundFaxRequested | OutboundFaxRejected) -> bool:
        return e.source_message_id == message_id

    accepted = await _wait(
        progress,
        "mail-poller picks the mail up, validator checks and renders it",
        _first_of(
            events.expect(OutboundFaxRequested, ours, deadline),
            events.expect(OutboundFaxRejected, ours, deadline),
        ),
        "the validator's decision (are the mail-poller and validator running?)",
    )
    if isinstance(accepted, OutboundFaxRejected):
        reasons = "; ".join(r.message for r in accepted.reasons)
        raise DemoFailed(f"the validator rejected the mail: {reasons}")
    fax_id = accepted.fax_id
    progress.step(
        f"accepted as fax {fax_id}: {accepted.pages} pages rendered to a "
        f"{accepted.settings.resolution} fax TIFF, to {accepted.destination}"
    )

    watcher = asyncio.create_task(_watch_calls(settings, accepted.destination, progress))
    try:
        outcome: FaxSent | FaxFailed = await _wait(
            progress,
            "transmitter dials through pstn-sim; the far end is our inbound receiver",
            _outbound_outcome(events, fax_id, deadline, progress),
            "the transmitter's result (is the transmitter running, and pstn-sim?)",
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if isinstance(outcome, FaxFailed):
        raise DemoFailed(
            f"the fax failed after {outcome.attempts} attempt(s): {outcome.failure.text} "
            f"(T.30 code {outcome.failure.code})"
        )
    stats = outcome.statistics
    progress.step(
        f"sent: {stats.pages_transferred} of {stats.pages_total} pages at {stats.bit_rate} bit/s"
        f"{', ECM' if stats.ecm else ''}, remote station '{stats.remote_station_id}', "
        f"{stats.duration_s:.1f} s of line time, attempt {outcome.attempts}, "
        f"carrier {await _carrier_name(store, outcome.carrier_id)}"
    )

    def to_receiver(e: InboundFaxReceived | InboundFaxFailed) -> bool:
        return e.called_number == receiver.number and e.occurred_at >= accepted.occurred_at

    inbound = await _wait(
        progress,
        f"inbound receiver stores the fax for {receiver.email}",
        _first_of(
            events.expect(InboundFaxReceived, to_receiver, deadline),
            events.expect(InboundFaxFailed, to_receiver, deadline),
        ),
        "the inbound receiver's result (is faxbox.inbound running on the port pstn-sim "
        "forwards to?)",
    )
    if isinstance(inbound, InboundFaxFailed):
        raise DemoFailed(f"the inbound fax failed: {inbound.failure.text}")
    progress.step(
        f"received by {receiver.email}'s faxbox: {inbound.statistics.pages_transferred} pages "
        f"from {inbound.caller_number} ('{inbound.statistics.remote_station_id}'), "
        f"stored as TIFF and PDF"
    )

    sent_mail = await _wait(
        progress,
        f"notifier mails {sender.email}",
        events.expect(
            NotificationSent,
            lambda e: e.fax_id == fax_id and e.kind == NotificationKind.sent,
            deadline,
        ),
        "the 'sent' mail (is the notifier running?)",
    )
    received_mail = await _wait(
        progress,
        f"notifier mails {receiver.email}",
        events.expect(
            NotificationSent,
            lambda e: e.fax_id == inbound.fax_id and e.kind == NotificationKind.received,
            deadline,
        ),
        "the 'received' mail (is the notifier running?)",
    )
    subject, _ = await _wait(
        progress,
        f"{sender.email}'s inbox",
        _fetch_mail(settings, sender.email, sent_mail.smtp_message_id, deadline),
        f"the 'sent' mail in {sender.email}'s IMAP inbox",
    )
    progress.step(f"{sender.email} got '{subject}'")
    subject, attachments = await _wait(
        progress,
        f"{receiver.email}'s inbox",
        _fetch_mail(settings, receiver.email, received_mail.smtp_message_id, deadline),
        f"the fax mail in {receiver.email}'s IMAP inbox",
    )
    pdfs = {name: data for name, data in attachments.items() if name.lower().endswith(".pdf")}
    if not pdfs:
        raise DemoFailed(f"{receiver.email}'s mail '{subject}' has no PDF attached")
    name, data = next(iter(pdfs.items()))
    settings.demo_output_dir.mkdir(parents=True, exist_ok=True)
    saved = settings.demo_output_dir / name
    saved.write_bytes(data)
    pages = len(PdfReader(BytesIO(data)).pages)
    progress.step(f"{receiver.email} got '{subject}' with {name} ({pages} pages), saved as {saved}")

    for label, event, status in (
        (sender.email, outcome, "sent"),
        (receiver.email, inbound, "received"),
    ):
        record = await _wait(
            progress,
            "history-writer records both faxes",
            _history(store, event.account_id, event.month, event.fax_id, status, deadline),
            f"{label}'s history entry (is the history-writer running?)",
        )
        progress.step(
            f"history of {label}: {record.direction} fax {event.fax_id} is {record.status}, "
            f"{len(record.timeline)} timeline entries"
        )
    print(
        f"\nDone. See both faxes in the portal: {settings.portal_url}/ "
        f"(sign in as {sender.email} or {receiver.email}, password {sender.password})",
        file=progress.out,
    )


async def _carrier_name(store: Store, carrier_id: str) -> str:
    names = {c.id: c.name for c in await store.list_carriers()}
    return names.get(carrier_id, carrier_id)


async def _first_of(*awaitables: Any) -> Any:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()


async def _outbound_outcome(
    events: Events, fax_id: str, deadline: float, progress: Progress
) -> FaxSent | FaxFailed:
    reported: set[int] = set()
    while True:
        event = await _first_of(
            events.expect(FaxSent, lambda e: e.fax_id == fax_id, deadline),
            events.expect(FaxFailed, lambda e: e.fax_id == fax_id, deadline),
            events.expect(
                FaxAttemptFailed,
                lambda e: e.fax_id == fax_id and e.attempt not in reported,
                deadline,
            ),
        )
        if not isinstance(event, FaxAttemptFailed):
            return event  # type: ignore[no-any-return]
        reported.add(event.attempt)
        when = (
            f"next try at {event.next_attempt_at:%H:%M:%S} UTC"
            if event.next_attempt_at
            else "no more tries"
        )
        progress.step(f"attempt {event.attempt} failed: {event.failure.text}; {when}", mark="!")


async def _watch_calls(settings: DemoSettings, number: str, progress: Progress) -> None:
    """Report pstn-sim's view of the call: dialled, answered, ended."""
    started = datetime.now().astimezone()
    shown: dict[str, set[str]] = {}
    while True:
        try:
            calls = await asyncio.to_thread(_get_json, f"{settings.pstn_sim_url}/calls")
        except OSError:
            await asyncio.sleep(0.5)
            continue
        for call in calls:
            if call.get("to") != number or datetime.fromisoformat(call["started_at"]) < started:
                continue
            states = shown.setdefault(call["id"], set())
            if "dialled" not in states:
                states.add("dialled")
                progress.step(
                    f"dialling {number} from {call.get('from')}: pstn-sim has the call "
                    f"({call.get('media')})",
                    mark="→",
                )
            if call.get("answered_at") and "answered" not in states:
                states.add("answered")
                progress.step("answered: T.30 training and pages on the line", mark="→")
            if call.get("ended_at") and "ended" not in states:
                states.add("ended")
                progress.step(f"call ended (SIP {call.get('sip_status')})", mark="→")
        await asyncio.sleep(0.2)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def _fetch_mail(
    settings: DemoSettings, user: str, message_id: str, deadline: float
) -> tuple[str, dict[str, bytes]]:
    while True:
        found = await asyncio.to_thread(_imap_find, settings, user, message_id)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError
        await asyncio.sleep(0.3)


def _imap_find(
    settings: DemoSettings, user: str, message_id: str
) -> tuple[str, dict[str, bytes]] | None:
    with imaplib.IMAP4(settings.imap_host, settings.imap_port, timeout=10) as imap:
        imap.login(user, settings.imap_test_password.get_secret_value())
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "HEADER", "Message-ID", message_id)
        ids = data[0].split()
        if not ids:
            return None
        _, fetched = imap.fetch(ids[-1], "(BODY.PEEK[])")
        raw = fetched[0][1] if isinstance(fetched[0], tuple) else b""
    parsed = email.message_from_bytes(raw, policy=default_policy)
    attachments: dict[str, bytes] = {}
    for part in parsed.walk():
        filename = part.get_filename()
        if filename and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                attachments[filename] = payload
    return str(parsed["Subject"]), attachments


async def _history(
    store: Store, account_id: str, month: str, fax_id: str, status: str, deadline: float
) -> HistoryRecord:
    collection = store.history.collection(account_id, month)
    while True:
        doc = await collection.find_one({"_id": fax_id})
        record = HistoryRecord.model_validate(doc) if doc is not None else None
        if record is not None and record.status == status:
            return record
        if time.monotonic() >= deadline:
            raise TimeoutError
        await asyncio.sleep(0.3)
