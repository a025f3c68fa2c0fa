"""Fax engine to fax engine over our SIP stack on 127.0.0.1: the pages must arrive intact.

One user agent dials another; each side pumps a spandsp session over the call's media
with ``run_fax_over_call``. Audio runs unpaced (lock-step, as fast as the CPU allows)
or on a 10x clock; T.38 needs a clock and runs at 20x (spandsp paces its image data
like a real modem, so call time matters).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from faxbox.fax.line.pump import SessionFactory, run_fax_over_call
from faxbox.fax.outcome import FailureClass, FaxOutcome
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.dialog import Call, EventKind
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import UserAgent

if TYPE_CHECKING:
    from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
else:
    from _pages import assert_pages_identical, save_fax_tiff, text_page

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "three.tif"
    return save_fax_tiff(path, [text_page(n) for n in (1, 2, 3)])


def factory(role: str, file: Path, **settings: object) -> SessionFactory:
    def make(kind: MediaKind) -> FaxEngine:
        config = CallSettings.model_validate({"file": file, **settings})
        if kind == "t38":
            return T38Session(role, config, name=f"t38-{role}")
        return FaxSession(role, config, name=f"fax-{role}")

    return make


@dataclass
class Line:
    caller: UserAgent
    callee: UserAgent
    received: Path
    outcome: asyncio.Future[FaxOutcome]
    remote_call: asyncio.Future[Call]

    def listen(
        self,
        before: Callable[[Call], Awaitable[None]] | None = None,
        **settings: object,
    ) -> None:
        """The callee answers and receives into ``received``."""

        async def handler(incoming: IncomingCall) -> None:
            incoming.ring()
            call = await incoming.answer()
            self.remote_call.set_result(call)
            if before is not None:
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(before(call)))
            try:
                out = await run_fax_over_call(
                    call, factory("receive", self.received, local_identity="200", **settings)
                )
            except BaseException as exc:
                self.outcome.set_exception(exc)
                raise
            self.outcome.set_result(out)

        self.callee.listen(handler)


async def _line(tmp_path: Path, pace: float, **options: Any) -> Line:
    loop = asyncio.get_running_loop()
    return Line(
        caller=await UserAgent.start(pace=pace),
        callee=await UserAgent.start(pace=pace, **options),
        received=tmp_path / "received.tif",
        outcome=loop.create_future(),
        remote_call=loop.create_future(),
    )


@pytest.fixture
async def line_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Line]]]:
    lines: list[Line] = []

    async def make(pace: float, **options: Any) -> Line:
        line = await _line(tmp_path, pace, **options)
        lines.append(line)
        return line

    yield make
    for line in lines:
        await line.caller.close()
        await line.callee.close()


def assert_success(sent: FaxOutcome, got: FaxOutcome, pages: int) -> None:
    for outcome in (sent, got):
        assert outcome.success, outcome
        assert outcome.completion_name == "T30_ERR_OK"
        assert outcome.pages_transferred == pages
    assert (sent.remote_id, got.remote_id) == ("200", "100")


async def _send(line: Line, document: Path, *, t38: bool = False) -> tuple[FaxOutcome, Call]:
    call = await line.caller.dial(line.callee.uri, "100", "200")
    if t38:
        assert await call.request_t38()
    sent = await run_fax_over_call(call, factory("send", document, local_identity="100"))
    return sent, call


async def test_three_pages_over_g711_unpaced(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    line = await line_factory(0)
    line.listen()
    started = time.monotonic()
    sent, call = await _send(line, three_pages)
    got = await asyncio.wait_for(line.outcome, 30)
    assert_success(sent, got, 3)
    assert_pages_identical(three_pages, line.received)
    assert call.media_kind == "audio"
    assert call.rtp.packets_sent > 50 * 30  # tens of seconds of call time ...
    assert time.monotonic() - started < 30  # ... in a few seconds
    assert sent.bit_rate == 14400


async def test_three_pages_over_g711_at_10x_with_the_jitter_buffer(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    line = await line_factory(10)
    line.listen()
    sent, call = await _send(line, three_pages)
    got = await asyncio.wait_for(line.outcome, 60)
    assert_success(sent, got, 3)
    assert_pages_identical(three_pages, line.received)
    assert call.rtp.jitter.late == 0


async def test_three_pages_over_t38_after_our_reinvite(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    line = await line_factory(20)
    line.listen()
    sent, call = await _send(line, three_pages, t38=True)
    got = await asyncio.wait_for(line.outcome, 60)
    assert_success(sent, got, 3)
    assert_pages_identical(three_pages, line.received)
    assert call.media_kind == "t38"
    assert call.udptl is not None
    assert call.udptl.packets_sent > 0
    remote = line.remote_call.result()
    assert remote.media_kind == "t38"
    assert remote.udptl is not None
    assert remote.udptl.decoder.lost == 0


async def test_receiver_switches_to_t38_mid_call(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    # What a gateway does: the call starts on audio, the answering side hears fax and
    # sends the re-INVITE; both engines start T.30 again on T.38.
    line = await line_factory(20)

    async def switch(call: Call) -> None:
        await asyncio.sleep(0.05)  # 1 s of call time on audio first
        assert await call.request_t38()

    line.listen(before=switch)
    sent, call = await _send(line, three_pages)
    got = await asyncio.wait_for(line.outcome, 60)
    assert_success(sent, got, 3)
    assert_pages_identical(three_pages, line.received)
    assert call.media_kind == "t38"
    assert call.rtp.packets_sent > 0  # there was audio before
    event = await call.events.get()
    assert (event.kind, event.media) == (EventKind.MEDIA_CHANGED, "t38")


async def test_t38_refused_falls_back_to_g711(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    line = await line_factory(0, accept_t38=False)
    line.listen()
    call = await line.caller.dial(line.callee.uri, "100", "200")
    assert not await call.request_t38()
    assert call.media_kind == "audio"
    sent = await run_fax_over_call(call, factory("send", three_pages, local_identity="100"))
    got = await asyncio.wait_for(line.outcome, 30)
    assert_success(sent, got, 3)
    assert_pages_identical(three_pages, line.received)
    assert (await call.events.get()).kind is EventKind.REINVITE_REFUSED


async def test_remote_hangup_mid_fax_is_a_dropped_call(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path
) -> None:
    line = await line_factory(0)

    async def handler(incoming: IncomingCall) -> None:
        call = await incoming.answer()
        for _ in range(50 * 20):  # 20 s of call time: into page 1
            await call.send_audio(await call.recv_audio())  # an echo, not a fax machine
        await call.hangup()

    line.callee.listen(handler)
    call = await line.caller.dial(line.callee.uri, "100", "200")
    sent = await run_fax_over_call(call, factory("send", three_pages))
    assert not sent.success
    assert call.remote_hung_up
    assert sent.pages_transferred == 0
    assert sent.failure_class in (FailureClass.LINE, FailureClass.PROTOCOL)


async def test_session_given_directly_and_t38_without_a_clock(
    line_factory: Callable[..., Awaitable[Line]], three_pages: Path, tmp_path: Path
) -> None:
    line = await line_factory(0)
    line.listen()
    call = await line.caller.dial(line.callee.uri, "100", "200")
    with FaxSession("send", CallSettings(file=three_pages, local_identity="100")) as session:
        sent = await run_fax_over_call(call, session)
    got = await asyncio.wait_for(line.outcome, 30)
    assert_success(sent, got, 3)
    assert call.is_ended

    # Unpaced T.38 has no common rhythm: refused rather than left to time out.
    other = await line_factory(0)
    other.listen()
    call = await other.caller.dial(other.callee.uri, "100", "200")
    assert await call.request_t38()
    with (
        T38Session("send", CallSettings(file=three_pages)) as t38,
        pytest.raises(ValueError, match="pace"),
    ):
        await run_fax_over_call(call, t38)
    assert call.is_ended
