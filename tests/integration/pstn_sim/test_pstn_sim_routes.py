"""pstn-sim calling an inbound receiver that runs as replicas: two stand-in receivers on
their own SIP ports, the simulator given both routes (``pstn_sim_inbound_uri``
comma-separated), as a carrier is given the routes to an operator's SBCs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from faxbox.fax.sip.ua import UserAgent
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings

if TYPE_CHECKING:
    from tests.integration.pstn_sim._pstn_support import FAXBOX, TABLE, Receiver
    from tests.integration.sip._pages import assert_pages_identical
else:
    from _pstn_support import FAXBOX, TABLE, Receiver

    from tests.integration.sip._pages import assert_pages_identical

pytestmark = pytest.mark.timeout(60)
PACE = 20
CALLER = "+12125550188"


@pytest.fixture
async def receivers(tmp_path: Path, pace: float) -> AsyncIterator[tuple[Receiver, Receiver]]:
    pair: list[Receiver] = []
    for name in ("a", "b"):
        ua = await UserAgent.start(pace=pace)
        receiver = Receiver(ua, tmp_path / name)
        receiver.directory.mkdir()
        ua.listen(receiver.handle)
        pair.append(receiver)
    yield pair[0], pair[1]
    for receiver in pair:
        await receiver.ua.close()


@pytest.fixture
async def routed(
    receivers: tuple[Receiver, Receiver], tmp_path: Path, pace: float
) -> AsyncIterator[RunningSimulator]:
    a, b = receivers
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=pace,
        pstn_sim_data_dir=tmp_path / "pstn-sim",
        pstn_sim_inbound_uri=f"{a.ua.uri}, {b.ua.uri}",
        pstn_sim_answer_timeout_s=10,
        # A round that finds no route waits this long: longer than the test allows, so
        # a call that gets through got through on the next route, at once.
        pstn_sim_originate_backoff_s=120,
        pstn_sim_originate_backoff_max_s=120,
    )
    async with running(settings, TABLE) as simulator:
        yield simulator


async def test_calls_spread_over_the_routes(
    routed: RunningSimulator, receivers: tuple[Receiver, Receiver], three_pages: Path
) -> None:
    a, b = receivers
    first = routed.originate(CALLER, FAXBOX, three_pages)
    second = routed.originate(CALLER, FAXBOX, three_pages)
    for record in (first, second):
        await asyncio.wait_for(routed.calls.wait(record.id), 30)
        assert record.outcome is not None
        assert record.outcome.success
        assert len(record.tries) == 1
    assert [first.tries[0].uri, second.tries[0].uri] == [a.ua.uri, b.ua.uri]
    for receiver in (a, b):
        *_, path = await asyncio.wait_for(receiver.results.get(), 5)
        assert_pages_identical(three_pages, path)


async def test_a_refusing_route_hands_the_call_to_the_next_at_once(
    routed: RunningSimulator, receivers: tuple[Receiver, Receiver], three_pages: Path
) -> None:
    a, b = receivers
    a.unavailable = 10  # the replica whose database is away: 503, Retry-After: 1
    first = routed.originate(CALLER, FAXBOX, three_pages)  # starts at a
    second = routed.originate(CALLER, FAXBOX, three_pages)  # starts at b
    for record in (first, second):
        await asyncio.wait_for(routed.calls.wait(record.id), 30)
        assert record.outcome is not None
        assert record.outcome.success
    assert [(t.uri, t.sip_status) for t in first.tries] == [(a.ua.uri, 503), (b.ua.uri, 200)]
    refused, taken = first.tries
    assert refused.ended_at is not None
    assert (taken.started_at - refused.ended_at).total_seconds() < 1  # not its Retry-After
    assert [(t.uri, t.sip_status) for t in second.tries] == [(b.ua.uri, 200)]
    assert a.count == 0
    assert b.count == 2
    assert a.results.empty()


async def test_a_round_no_route_takes_waits_and_tries_them_all_again(
    routed: RunningSimulator, receivers: tuple[Receiver, Receiver], three_pages: Path
) -> None:
    a, b = receivers
    a.unavailable = b.unavailable = 1  # both replicas away for one round
    record = routed.originate(CALLER, FAXBOX, three_pages)
    await asyncio.wait_for(routed.calls.wait(record.id), 30)
    statuses = [(t.uri, t.sip_status) for t in record.tries]
    assert statuses == [(a.ua.uri, 503), (b.ua.uri, 503), (a.ua.uri, 200)]
    second_round = record.tries[2]
    assert record.tries[1].ended_at is not None
    # The round waited the shortest Retry-After (1 s), not the 120 s backoff.
    waited = (second_round.started_at - record.tries[1].ended_at).total_seconds()
    assert 0.9 <= waited < 5
    assert record.outcome is not None
    assert record.outcome.success
