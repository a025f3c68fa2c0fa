"""The fax line facade over real calls on 127.0.0.1: session by media, pace, watchdog, hangup.

``faxbox.fax.line.send``/``receive`` between two of our user agents, as the transmitter,
the inbound receiver and pstn-sim use them: the pages must arrive intact on G.711 and on
T.38, a far end that goes silent is hung up after the silence limit in call time, and a
cancelled send never leaves the call up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from faxbox.fax.line import LineResult, LineSettings, receive, send
from faxbox.fax.line.contract import fax_failure
from faxbox.fax.session import CallSettings, FaxEngine, T38Session
from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, parse_message
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import UserAgent

if TYPE_CHECKING:
    from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
else:
    from _pages import assert_pages_identical, save_fax_tiff, text_page

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def two_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "two.tif"
    return save_fax_tiff(path, [text_page(n) for n in (1, 2)])


class Far:
    """The answering side: receives with the facade, or answers and stays silent."""

    def __init__(self, ua: UserAgent, received: Path, *, silent: bool = False) -> None:
        self.ua = ua
        self.received = received
        self.silent = silent
        self.call: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[LineResult] = asyncio.get_running_loop().create_future()
        self.sessions: list[tuple[MediaKind, FaxEngine]] = []
        ua.listen(self.handle)

    async def handle(self, incoming: IncomingCall) -> None:
        call = await incoming.answer()
        self.call.set_result(call)
        if self.silent:  # a far end that vanished: no media, no BYE
            return
        settings = CallSettings(file=self.received, local_identity="FAR")
        result = await receive(
            call,
            settings,
            name="far",
            on_session=lambda kind, engine: self.sessions.append((kind, engine)),
        )
        self.result.set_result(result)


@pytest.fixture
async def agents() -> AsyncIterator[list[UserAgent]]:
    made: list[UserAgent] = []
    yield made
    for ua in made:
        await ua.close()


async def _pair(made: list[UserAgent], pace: float) -> tuple[UserAgent, UserAgent]:
    caller = await UserAgent.start(pace=pace)
    callee = await UserAgent.start(pace=pace)
    made += [caller, callee]
    return caller, callee


def _invites(ua: UserAgent) -> list[SipRequest]:
    messages = (parse_message(m) for m in ua.sent)
    return [m for m in messages if isinstance(m, SipRequest) and m.method == "INVITE"]


async def test_g711_both_ways_and_the_result_in_call_time(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 10)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    sent = await send(call, CallSettings(file=two_pages, local_identity="NEAR"))
    got = await asyncio.wait_for(far.result, 60)
    for result in (sent, got):
        assert result.fax.success, result.fax
        assert result.fax.pages_transferred == 2
        assert result.media == "audio"
        # Two pages at 14,400 bit/s take tens of seconds of call time (a few real ones).
        assert 10 < result.duration_s < 120
    assert fax_failure(sent.fax, pages_expected=2) is None
    assert [kind for kind, _ in far.sessions] == ["audio"]
    assert_pages_identical(two_pages, far.received)
    assert call.is_ended
    assert len(_invites(caller)) == 1


async def test_request_t38_moves_both_ends_to_t38_sessions(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 20)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    mine: list[tuple[MediaKind, FaxEngine]] = []
    sent = await send(
        call,
        CallSettings(file=two_pages),
        LineSettings(request_t38=True),
        on_session=lambda kind, engine: mine.append((kind, engine)),
    )
    got = await asyncio.wait_for(far.result, 60)
    assert sent.fax.success, sent.fax
    assert got.fax.success, got.fax
    assert (sent.media, got.media) == ("t38", "t38")
    assert [kind for kind, _ in mine] == ["t38"]
    assert isinstance(mine[0][1], T38Session)
    # The far end started on audio and switched when our re-INVITE arrived.
    assert [kind for kind, _ in far.sessions] == ["audio", "t38"]
    assert_pages_identical(two_pages, far.received)
    assert len(_invites(caller)) == 2


async def test_an_unpaced_line_never_asks_for_t38(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 0)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    sent = await send(call, CallSettings(file=two_pages), LineSettings(request_t38=True))
    await asyncio.wait_for(far.result, 60)
    assert sent.fax.success, sent.fax
    assert sent.media == "audio"
    assert len(_invites(caller)) == 1  # no re-INVITE


async def test_a_far_end_that_goes_silent_is_hung_up_after_the_silence_limit(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 20)
    far = Far(callee, tmp_path / "rx.tif", silent=True)
    call = await caller.dial(callee.uri, "100", "200")
    line = LineSettings(silence_s=10, request_t38=True)
    sent = await asyncio.wait_for(send(call, CallSettings(file=two_pages), line), 30)
    assert not sent.fax.success
    assert sent.media == "t38"
    # Hung up by the watchdog after 10 s of call time, long before T.30's own 35 s.
    assert 10 <= sent.duration_s < 30
    failure = fax_failure(sent.fax, pages_expected=2)
    assert failure is not None
    remote = far.call.result()
    await asyncio.wait_for(remote.ended.wait(), 5)
    assert remote.remote_hung_up


async def test_a_cancelled_send_hangs_up(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 10)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    sending = asyncio.create_task(send(call, CallSettings(file=two_pages)))
    await asyncio.sleep(0.3)  # 3 s of call time: T.30 has started
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert call.is_ended
    remote = await asyncio.wait_for(far.call, 5)
    await asyncio.wait_for(remote.ended.wait(), 5)
    assert remote.remote_hung_up
    got = await asyncio.wait_for(far.result, 30)
    assert not got.fax.success


async def test_a_stopped_send_ends_t30_reports_what_was_confirmed_and_hangs_up(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 10)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    stop = asyncio.Event()
    engines: list[FaxEngine] = []

    async def cancel_after_page_1() -> None:
        while not (engines and engines[-1].pages):
            await asyncio.sleep(0.005)
        stop.set()

    canceller = asyncio.create_task(cancel_after_page_1())
    sent = await asyncio.wait_for(
        send(
            call,
            CallSettings(file=two_pages),
            stop=stop,
            on_session=lambda kind, engine: engines.append(engine),
        ),
        60,
    )
    await canceller
    assert not sent.fax.success
    assert sent.fax.pages_transferred == 1  # page 1 confirmed, page 2 never sent
    assert [p.page for p in sent.fax.pages] == [1]
    assert call.is_ended
    remote = await asyncio.wait_for(far.call, 5)
    await asyncio.wait_for(remote.ended.wait(), 5)
    assert remote.remote_hung_up
    got = await asyncio.wait_for(far.result, 30)
    assert got.fax.pages_transferred == 1


async def test_hang_up_false_leaves_the_call_to_the_caller(
    agents: list[UserAgent], two_pages: Path, tmp_path: Path
) -> None:
    caller, callee = await _pair(agents, 0)
    far = Far(callee, tmp_path / "rx.tif")
    call = await caller.dial(callee.uri, "100", "200")
    sent = await send(call, CallSettings(file=two_pages), LineSettings(hang_up=False))
    assert sent.fax.success, sent.fax
    got = await asyncio.wait_for(far.result, 30)  # the far end hangs up itself
    assert got.fax.success, got.fax
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.remote_hung_up
