"""The simulated phone network: one SIP user agent, remote fax machines behind it.

Calls *to* the simulator (``to_sim``) are handled by the scenario the dialled number
matches (see ``pstn_sim_scenarios``). Calls *from* the simulator (``from_sim``) are originated on
request: a remote fax machine sends a document to our inbound receiver.

``forward`` is a back-to-back user agent: the A leg (caller → simulator) and the B leg
(simulator → ``pstn_sim_inbound_uri``) are separate SIP calls. G.711 audio is copied block by
block both ways (each leg keeps its own jitter buffer and clock, so this adds about two
jitter buffers of delay; fax modems do not mind). When either leg switches to T.38 the
other leg is re-INVITEd to T.38 and IFP packets are relayed as they arrive (UDPTL is
decoded and re-encoded per leg, so each leg has its own redundancy). If the other leg
refuses T.38, the leg that switched is re-INVITEd back to audio. Limits: no
transcoding between an audio leg and a T.38 leg (a real T.38 gateway would), IFPs sent
while the other leg is being re-INVITEd are delivered late, when the caller gives up
while the B leg rings the B leg is only CANCELled at ``pstn_sim_answer_timeout_s`` (or hung up
as soon as it answers), and the caller's SIP identity is passed on as the number only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from faxbox.fax import line
from faxbox.fax.line import LineSettings
from faxbox.fax.line.pace import real_seconds
from faxbox.fax.line.pump import T38_BLOCKS_PER_WAKE
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, FaxEngine, Role
from faxbox.fax.sip.dialog import Call, CallEnded
from faxbox.fax.sip.digest import Credentials, authorization_matches, digest_challenge
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest
from faxbox.fax.sip.rtp import Clock, RtpStream
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import CallFailed, UserAgent
from faxbox.fax.sip.udptl import UdptlStream
from faxbox.fax.tiffcheck import TiffRejected, check_tiff, count_pages
from faxbox.pstn_sim.metrics import CALLS, CALLS_IN_PROGRESS, LOOP_LAG
from faxbox.pstn_sim.pages import page_digests
from faxbox.pstn_sim.records import CallLog, CallRecord, Direction, OutcomeSummary, Try, now
from faxbox.pstn_sim.redial import RedialPolicy, Routes, parse_routes, worth_another_try
from faxbox.pstn_sim.scenarios import Behaviour, Scenario, choose, load_table
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.render import render

log = logging.getLogger("faxbox.pstn_sim")

# drop_on_page: line time after the previous page's post-page command arrived before the
# line goes dead. The MCF confirming that page takes about 1.5 s at 300 bit/s; after it
# the sender trains and sends page N, so 3 s lands inside page N for any real page.
DROP_DELAY_S = 3.0
# The same when we send: page N starts as soon as the MCF for page N-1 has arrived.
SEND_DROP_DELAY_S = 1.5
BLOCK_S = 0.02
SAMPLE_RATE = 8000


def dialled_number(user: str) -> str:
    """The number as the scenario table sees it: E.164 with the + (digits get one)."""
    number = user.strip()
    if number.isdigit():
        return "+" + number
    return number


class Simulator:
    """A running phone network on ``settings.pstn_sim_sip_host:pstn_sim_sip_port``.

    ``start()`` opens the SIP socket; ``close()`` hangs up and stops. ``calls`` is the
    call log. ``originate`` places a fax call to our inbound receiver.
    """

    def __init__(self, settings: PstnSettings, table: tuple[Scenario, ...] | None = None) -> None:
        self.settings = settings
        self.table = table if table is not None else load_table(settings.pstn_sim_scenarios)
        self.calls = CallLog()
        self.ua: UserAgent | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._nonces: dict[str, None] = {}
        self._rng = random.Random()
        self._digested: set[str] = set()  # calls whose page digests are filled in
        self.data_dir = settings.pstn_sim_data_dir
        self.routes = Routes(parse_routes(settings.pstn_sim_inbound_uri))
        # The simulator records how a call ended before its BYE is answered (a caller
        # that vanished would hold the record open for 64·T1), so it hangs up itself.
        self.line_settings = LineSettings(
            silence_s=settings.pstn_sim_media_timeout_s,
            max_call_s=settings.pstn_sim_max_call_s,
            hang_up=False,
        )

    # --- life -----------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        outbound = None
        s = self.settings
        if s.pstn_sim_outbound_username is not None and s.pstn_sim_outbound_password is not None:
            outbound = Credentials(s.pstn_sim_outbound_username, s.pstn_sim_outbound_password)
        self.ua = await UserAgent.start(
            s.pstn_sim_sip_host,
            s.pstn_sim_sip_port,
            pace=s.pstn_sim_pace,
            jitter_prefill=s.pstn_sim_jitter_prefill,
            credentials=outbound,
            user="pstn-sim",
            user_agent="Faxbox pstn-sim",
        )
        self.ua.listen(self._on_invite)
        self._spawn(self._watch_loop_lag())
        log.info("pstn-sim listening on %s (pace %s)", self.sip_uri, s.pstn_sim_pace)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.ua is not None:
            await self.ua.close()
            self.ua = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def sip_uri(self) -> str:
        if self.ua is None:
            raise RuntimeError("the simulator is not started")
        return self.ua.uri

    @property
    def sip_port(self) -> int:
        if self.ua is None:
            raise RuntimeError("the simulator is not started")
        return self.ua.port

    def _ua(self) -> UserAgent:
        if self.ua is None:
            raise RuntimeError("the simulator is not started")
        return self.ua

    def _line_s(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of line time."""
        return real_seconds(seconds, self.settings.pstn_sim_pace)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch_loop_lag(self, interval: float = 0.01, window: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        worst, window_start = 0.0, loop.time()
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            now_ = loop.time()
            worst = max(worst, now_ - before - interval)
            if now_ - window_start >= window:
                LOOP_LAG.set(worst)
                if worst > 0.1:
                    log.warning("event loop stalled for %.0f ms", worst * 1000)
                worst, window_start = 0.0, now_

    # --- calls to the network -------------------------------------------------------

    async def _on_invite(self, incoming: IncomingCall) -> None:
        to = dialled_number(incoming.to_number)
        from_ = dialled_number(incoming.from_number)
        if not self._authorized(incoming):
            return
        row = choose(self.table, to).on_call(self.calls.dialled(to))
        record = self.calls.new("to_sim", from_, to, row.behaviour.value)
        CALLS_IN_PROGRESS.labels("to_sim").inc()
        log.info("call %s from %s to %s: %s", record.id, from_, to, row.behaviour.value)
        try:
            await self._dispatch(incoming, row, record)
        except Exception as exc:
            log.exception("call %s failed in the simulator", record.id)
            record.error = record.error or f"{type(exc).__name__}: {exc}"
            if not incoming.decided:
                await incoming.reject(500)
                record.sip_status = 500
            elif incoming.call is not None:
                await incoming.call.hangup()
        finally:
            if not incoming.decided:  # an early return: never leave the caller ringing
                await incoming.reject(480)
                record.sip_status = record.sip_status or 480
            self._finish(record, "to_sim")

    def _finish(self, record: CallRecord, direction: Direction) -> None:
        self.calls.end(record)
        CALLS_IN_PROGRESS.labels(direction).dec()
        if record.outcome is not None:
            result = (
                "success" if record.outcome.success else f"failed_{record.outcome.failure_class}"
            )
        elif record.error is not None:
            result = "error"
        else:
            result = f"sip_{record.sip_status}"
        CALLS.labels(direction, record.behaviour, result).inc()

    async def _dispatch(self, incoming: IncomingCall, row: Scenario, record: CallRecord) -> None:
        behaviour = row.behaviour
        if behaviour in (Behaviour.BUSY, Behaviour.REJECT):
            await incoming.reject(row.final_status)
            record.sip_status = row.final_status
            return
        if behaviour is Behaviour.NO_ANSWER:
            incoming.ring()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(incoming.cancelled.wait(), self._line_s(row.ring_s))
            if incoming.cancelled.is_set():
                record.sip_status = 487
            else:
                await incoming.reject(480)
                record.sip_status = 480
            return
        if behaviour is Behaviour.FORWARD:
            await self._forward(incoming, record)
            return
        incoming.ring()
        if row.answer_after_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(incoming.cancelled.wait(), self._line_s(row.answer_after_s))
        if incoming.cancelled.is_set():
            record.sip_status = 487
            return
        try:
            call = await incoming.answer()
        except CallEnded:
            record.sip_status = 487 if incoming.cancelled.is_set() else 488
            return
        record.answered_at = now()
        record.sip_status = 200
        if behaviour is Behaviour.REFUSE_T38:
            call.accept_t38 = False
        if behaviour is Behaviour.HUMAN:
            await self._human(call, row)
            return
        await self._receive(call, row, record)

    # --- digest authentication (as a trunk would ask) -------------------------------

    def _authorized(self, incoming: IncomingCall) -> bool:
        s = self.settings
        if s.pstn_sim_auth_username is None or s.pstn_sim_auth_password is None:
            return True
        request = incoming.request
        header = request.headers.get("Authorization")
        if header is not None and self._valid_digest(request, header):
            return True
        nonce = secrets.token_hex(12)
        self._nonces[nonce] = None
        while len(self._nonces) > 1000:
            self._nonces.pop(next(iter(self._nonces)))
        response = incoming.tx.response(401, to_tag=incoming.local_tag)
        response.headers.add("WWW-Authenticate", digest_challenge(s.pstn_sim_auth_realm, nonce))
        incoming.decided = True
        incoming.tx.respond(response)
        if header is not None:  # wrong credentials: worth a line in the log
            record = self.calls.new(
                "to_sim",
                dialled_number(incoming.from_number),
                dialled_number(incoming.to_number),
                "auth",
            )
            record.sip_status = 401
            CALLS_IN_PROGRESS.labels("to_sim").inc()
            self._finish(record, "to_sim")
        return False

    def _valid_digest(self, request: SipRequest, header: str) -> bool:
        s = self.settings
        if s.pstn_sim_auth_username is None or s.pstn_sim_auth_password is None:
            return True
        credentials = Credentials(s.pstn_sim_auth_username, s.pstn_sim_auth_password)
        return authorization_matches(
            header, credentials, request.method, realm=s.pstn_sim_auth_realm, nonces=self._nonces
        )

    # --- a fax machine that receives ------------------------------------------------

    async def _receive(self, call: Call, row: Scenario, record: CallRecord) -> None:
        path = self.data_dir / f"{record.id}.tif"
        sessions: list[FaxEngine] = []
        lossy = row.behaviour is Behaviour.LOSSY

        def started(kind: MediaKind, session: FaxEngine) -> None:
            record.media = "t38" if kind == "t38" else "g711"
            stream = call.udptl if kind == "t38" else call.rtp
            if lossy and stream is not None:
                self._make_lossy(stream, row)
            sessions.append(session)

        dropper = None
        if row.behaviour is Behaviour.DROP_ON_PAGE:
            dropper = self._spawn(self._drop_on_page(call, sessions, row.page, DROP_DELAY_S))
        try:
            result = await line.receive(
                call,
                self._fax_settings(path),
                self.line_settings,
                name=f"sim-rx-{record.id}",
                on_session=started,
            )
        finally:
            if dropper is not None:
                dropper.cancel()
        self._record_outcome(record, result.fax, path)
        # The record is complete now; a BYE to a caller that vanished (no answer for
        # 64·T1) must not hold it open.
        self._spawn(call.hangup())

    async def digest_pages(self, records: Iterable[CallRecord]) -> None:
        """Fill in ``page_digests`` of the calls that kept pages, once each, when asked.

        Not at each call's end: hashing every page's pixels costs more CPU than the
        call's own media did, and done for each call of a burst (in threads, which hold
        the interpreter lock in turns with the event loop) it slowed the loop carrying
        the other calls' media past T.30's timers (e2e at pace 10: a third of the far
        end's CPU, and clusters of calls failed at once). Whoever reads the records pays.
        """
        pending = [r for r in records if r.received_tiff and r.id not in self._digested]
        if not pending:
            return
        self._digested.update(r.id for r in pending)

        def digest_all() -> list[list[str]]:
            digests: list[list[str]] = []
            for record in pending:
                try:
                    digests.append(page_digests(Path(str(record.received_tiff)), below_header=True))
                except (OSError, ValueError):
                    digests.append([])
            return digests

        for record, digests in zip(pending, await asyncio.to_thread(digest_all), strict=True):
            record.page_digests = digests

    def _fax_settings(self, file: Path) -> CallSettings:
        return CallSettings(file=file, local_identity=self.settings.pstn_sim_station_id)

    def _record_outcome(self, record: CallRecord, outcome: FaxOutcome, path: Path) -> None:
        record.outcome = OutcomeSummary.of(outcome)
        record.pages_received = outcome.pages_transferred
        if path.exists() and outcome.pages_transferred > 0:
            record.received_tiff = str(path)
            with contextlib.suppress(TiffRejected, OSError):
                record.pages_received = count_pages(path)
        log.info(
            "call %s: %s, %d page(s), %s",
            record.id,
            "success" if outcome.success else "failed",
            outcome.pages_transferred,
            outcome.completion_name,
        )

    async def _drop_on_page(
        self, call: Call, sessions: list[FaxEngine], page: int, delay_s: float
    ) -> None:
        """Hang up once page ``page`` is on its way (pages before it were confirmed)."""
        while True:
            await asyncio.sleep(self._line_s(BLOCK_S * 5))
            if call.is_ended:
                return
            done = _pages_done(sessions[-1]) if sessions else 0
            if done >= page - 1:
                break
        await asyncio.sleep(self._line_s(delay_s))
        log.info("%s: dropping the line during page %d", call.call_id, page)
        await call.hangup()

    def _make_lossy(self, stream: RtpStream | UdptlStream, row: Scenario) -> None:
        """Drop ``row.loss`` of the datagrams this stream receives; delay the rest by up to
        ``row.jitter_ms`` of line time (the jitter buffer sorts them out again)."""
        if getattr(stream, "_pstn_lossy", False):
            return
        deliver = stream.datagram
        loop = asyncio.get_running_loop()
        jitter_s = self._line_s(row.jitter_ms / 1000)
        rng = random.Random(row.seed) if row.seed is not None else self._rng

        def lossy(data: bytes, addr: tuple[str, int]) -> None:
            if rng.random() < row.loss:
                return
            if jitter_s:
                loop.call_later(rng.random() * jitter_s, deliver, data, addr)
            else:
                deliver(data, addr)

        # The socket's protocol calls stream.datagram: an instance attribute wins.
        setattr(stream, "datagram", lossy)  # noqa: B010
        setattr(stream, "_pstn_lossy", True)  # noqa: B010

    # --- a person answers -----------------------------------------------------------

    async def _human(self, call: Call, row: Scenario) -> None:
        """Say "hello?" now and then (tones and noise, none near fax frequencies)."""
        blocks = int(row.hold_s / BLOCK_S)
        voice = _voice_blocks(self._rng)
        try:
            for n in range(blocks):
                await call.send_audio(voice[n % len(voice)])
                await call.recv_audio()
        except CallEnded:
            return
        await call.hangup()

    # --- forward: a back-to-back user agent ------------------------------------------

    async def _forward(self, incoming: IncomingCall, record: CallRecord) -> None:
        dial = asyncio.create_task(self._dial_b_leg(self.routes.for_a_call(), incoming, record))
        cancelled = asyncio.create_task(incoming.cancelled.wait())
        await asyncio.wait([dial, cancelled], return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        if not dial.done():  # the caller gave up while the B leg rang
            self._spawn(_hang_up_when_answered(dial))
            record.sip_status = 487
            return
        try:
            b_leg = dial.result()
        except CallFailed as exc:
            await incoming.reject(exc.status, exc.reason)
            record.sip_status = exc.status
            return
        if incoming.cancelled.is_set():
            await b_leg.hangup()
            record.sip_status = 487
            return
        try:
            a_leg = await incoming.answer()
        except CallEnded:
            await b_leg.hangup()
            record.sip_status = 487
            return
        record.answered_at = now()
        record.sip_status = 200
        await Bridge(a_leg, b_leg, record).run()

    async def _dial_b_leg(
        self, routes: tuple[str, ...], incoming: IncomingCall, record: CallRecord
    ) -> Call:
        """The forward's B leg, on the first route that takes it; a route's "not now" or
        silence goes on to the next (the last one's failure stands)."""
        last: CallFailed | None = None
        for route in routes:
            try:
                return await self._ua().dial(
                    route,
                    record.from_,
                    record.to,
                    answer_timeout=self.settings.pstn_sim_answer_timeout_s,
                    on_progress=lambda status, _reason: incoming.ring(status),
                )
            except CallFailed as exc:
                if not worth_another_try(exc, answered=False, pages=0):
                    raise
                last = exc
        assert last is not None
        raise last

    # --- calls from the network -----------------------------------------------------

    def originate(
        self,
        from_: str,
        to: str,
        document: Path,
        media: Literal["g711", "t38"] = "g711",
        uri: str | None = None,
        drop_on_page: int | None = None,
        redial: RedialPolicy | None = None,
    ) -> CallRecord:
        """Start a fax call from a remote machine to ``uri`` (default: the inbound
        receiver's routes); returns its record at once (``calls.wait(id)`` for the end,
        after the last try: see ``redial``, default from the settings).
        ``drop_on_page``: hang up while sending that page (a partial fax)."""
        record = self.calls.new("from_sim", from_, to, "originate")
        record.media = media
        CALLS_IN_PROGRESS.labels("from_sim").inc()
        self._spawn(
            self._originate(
                record,
                document,
                media,
                (uri,) if uri else self.routes.for_a_call(),
                drop_on_page,
                redial or self.redial,
            )
        )
        return record

    @property
    def redial(self) -> RedialPolicy:
        s = self.settings
        return RedialPolicy(
            tries=s.pstn_sim_originate_tries,
            window_s=s.pstn_sim_originate_window_s,
            backoff_s=s.pstn_sim_originate_backoff_s,
            backoff_max_s=s.pstn_sim_originate_backoff_max_s,
        )

    async def _originate(
        self,
        record: CallRecord,
        document: Path,
        media: str,
        routes: tuple[str, ...],
        drop_on_page: int | None,
        redial: RedialPolicy,
    ) -> None:
        try:
            try:
                tiff = await asyncio.to_thread(self._prepare_document, document, record.id)
            except Exception as exc:
                log.warning("originate %s: no fax to send: %s", record.id, exc)
                record.error = f"{type(exc).__name__}: {exc}"
                return
            started = asyncio.get_running_loop().time()
            rounds = 0
            while True:
                rounds += 1
                retry_after: list[int] = []
                for route in routes:
                    attempt = Try(started_at=now(), uri=route)
                    record.tries.append(attempt)
                    failure, answered = await self._originate_once(
                        record, attempt, tiff, media, route, drop_on_page
                    )
                    attempt.ended_at = now()
                    if drop_on_page is not None and answered:
                        return  # a cut call asked for: the partial fax is the point
                    if not worth_another_try(failure, answered, attempt.pages):
                        return
                    if answered:
                        break  # no page got through: the machine redials after its pause
                    if attempt.retry_after_s is not None:
                        retry_after.append(attempt.retry_after_s)
                elapsed = asyncio.get_running_loop().time() - started
                delay = redial.next_delay(rounds, elapsed, min(retry_after, default=None))
                if delay is None:
                    log.info("originate %s: giving up after %d tries", record.id, len(record.tries))
                    return
                log.info(
                    "originate %s: try %d ended (%s); again in %.1f s",
                    record.id,
                    len(record.tries),
                    attempt.error or attempt.sip_status,
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            self._finish(record, "from_sim")

    async def _originate_once(
        self,
        record: CallRecord,
        attempt: Try,
        tiff: Path,
        media: str,
        uri: str,
        drop_on_page: int | None,
    ) -> tuple[CallFailed | None, bool]:
        """One try; the record's fields say how it went. (Its SIP failure, answered)."""
        record.answered_at = record.outcome = None
        record.sip_status = record.error = None
        try:
            call = await self._ua().dial(
                uri, record.from_, record.to, answer_timeout=self.settings.pstn_sim_answer_timeout_s
            )
        except CallFailed as exc:
            record.sip_status = attempt.sip_status = exc.status
            record.error = attempt.error = f"{exc.status} {exc.reason}"
            attempt.retry_after_s = exc.retry_after
            return exc, False
        except Exception as exc:
            log.warning("originate %s failed: %s", record.id, exc)
            record.error = attempt.error = f"{type(exc).__name__}: {exc}"
            return None, False
        record.answered_at = attempt.answered_at = now()
        record.sip_status = attempt.sip_status = 200
        sessions: list[FaxEngine] = []
        try:

            def started(kind: MediaKind, session: FaxEngine) -> None:
                record.media = "t38" if kind == "t38" else "g711"
                sessions.append(session)

            dropper = None
            if drop_on_page is not None:
                dropper = self._spawn(
                    self._drop_on_page(call, sessions, drop_on_page, SEND_DROP_DELAY_S)
                )
            settings = dataclasses.replace(self.line_settings, request_t38=media == "t38")
            try:
                result = await line.send(
                    call,
                    self._fax_settings(tiff),
                    settings,
                    name=f"sim-tx-{record.id}-{len(record.tries)}",
                    on_session=started,
                )
            finally:
                if dropper is not None:
                    dropper.cancel()
            record.outcome = OutcomeSummary.of(result.fax)
            attempt.pages = result.fax.pages_transferred
            self._spawn(call.hangup())
        except Exception as exc:
            log.exception("originate %s failed", record.id)
            record.error = attempt.error = f"{type(exc).__name__}: {exc}"
            attempt.pages = max((_pages_done(s) for s in sessions), default=0)
            await call.hangup()
        return None, True

    def _prepare_document(self, document: Path, call_id: str) -> Path:
        """A fax TIFF for ``document``: checked as is, or rendered from a PDF/other TIFF."""
        target = self.data_dir / f"{call_id}-sent.tif"
        data = document.read_bytes()
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            try:
                check_tiff(document)
            except TiffRejected:
                pass
            else:
                shutil.copyfile(document, target)
                return target
        return _render(data, target)


def _render(data: bytes, target: Path) -> Path:
    rendered = render(data)
    target.write_bytes(rendered.tiff)
    check_tiff(target)
    return target


async def _hang_up_when_answered(dial: asyncio.Task[Call]) -> None:
    """The B leg of a forward whose caller gave up: end it however the INVITE ends
    (our dial CANCELs it itself after its answer timeout)."""
    with contextlib.suppress(CallFailed):
        call = await dial
        await call.hangup()


def _pages_done(session: FaxEngine) -> int:
    """Receiving: pages whose post-page command has arrived. Sending: pages the far end
    confirmed (phase D either way)."""
    if session.role is Role.SEND:
        return len({p.page for p in session.pages if p.result in ("MCF", "RTP", "PIP")})
    return len({p.page for p in session.pages})


def _voice_blocks(rng: random.Random) -> list[npt.NDArray[np.int16]]:
    """About 3 s of "speech": syllables of 300-700 Hz harmonics, pauses with room noise."""
    blocks: list[npt.NDArray[np.int16]] = []
    t = np.arange(160) / SAMPLE_RATE
    phase = 0.0
    for syllable in range(8):
        f0 = 300 + 60 * (syllable % 5)
        for _ in range(10):  # 200 ms voiced
            wave = np.zeros(160)
            for k in (1, 2, 3):
                wave += np.sin(2 * math.pi * f0 * k * t + k * phase) / k
            phase += 2 * math.pi * f0 * 160 / SAMPLE_RATE
            blocks.append((wave * 4000).astype(np.int16))
        for _ in range(5):  # 100 ms pause
            noise = np.array([rng.gauss(0, 80) for _ in range(160)])
            blocks.append(noise.astype(np.int16))
    return blocks


class Bridge:
    """Media between two established calls until either hangs up (see the module doc)."""

    def __init__(self, a: Call, b: Call, record: CallRecord) -> None:
        self.a = a
        self.b = b
        self.record = record

    async def run(self) -> None:
        pumps = [
            asyncio.create_task(self._pump(self.a, self.b)),
            asyncio.create_task(self._pump(self.b, self.a)),
            asyncio.create_task(self._signalling()),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for leg in (self.a, self.b):
                if not leg.is_ended:
                    await leg.hangup()

    async def _pump(self, src: Call, dst: Call) -> None:
        # IFPs are collected every few media slots (as the terminals step, see
        # T38_BLOCKS_PER_WAKE) rather than awaited one by one, so a leg going back to
        # audio (its UDPTL closed) never leaves the pump stuck.
        clock = Clock(max(src.pace, 1.0))
        with contextlib.suppress(CallEnded):
            while not (src.is_ended and dst.is_ended):
                if src.media_kind == "t38" and dst.media_kind == "t38":
                    await clock.wait_slot(T38_BLOCKS_PER_WAKE)
                    if src.is_ended:
                        return
                    for seq, ifp in src.take_ifps():
                        await dst.send_ifp(ifp, seq)
                else:
                    block = await src.recv_audio()
                    if dst.media_kind == "audio" and src.media_kind == "audio":
                        await dst.send_audio(block)
                    elif dst.is_ended:
                        return

    async def _signalling(self) -> None:
        a_events = asyncio.create_task(self.a.events.get())
        b_events = asyncio.create_task(self.b.events.get())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [a_events, b_events, _ended(self.a), _ended(self.b)],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if self.a.is_ended or self.b.is_ended:
                    return
                if a_events in done:
                    a_events.result()
                    a_events = asyncio.create_task(self.a.events.get())
                    await self._align(self.a, self.b)
                if b_events in done:
                    b_events.result()
                    b_events = asyncio.create_task(self.b.events.get())
                    await self._align(self.b, self.a)
        finally:
            a_events.cancel()
            b_events.cancel()

    async def _align(self, changed: Call, other: Call) -> None:
        """Bring ``other`` to ``changed``'s media, or ``changed`` back to audio."""
        if changed.media_kind == other.media_kind or changed.is_ended or other.is_ended:
            return
        if changed.media_kind == "t38":
            log.info("%s: T.38 on one leg, re-INVITE the other", self.record.id)
            if await other.request_t38():
                self.record.media = "t38"
                return
            log.info("%s: the other leg refused T.38, back to audio", self.record.id)
            await changed.request_audio()
        else:
            await other.request_audio()
        self.record.media = "g711"


async def _ended_wait(call: Call) -> None:
    await call.ended.wait()


def _ended(call: Call) -> asyncio.Task[None]:
    return asyncio.ensure_future(_ended_wait(call))
