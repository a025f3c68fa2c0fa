"""Fixtures of the pstn-sim tests: one simulator, caller and stand-in inbound receiver per
module, on the line clock the module names in ``PACE`` (default 20), with its
``JITTER_PREFILL`` (default: the SIP layer's for the pace)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from faxbox.fax.sip.ua import UserAgent
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings

if TYPE_CHECKING:
    from tests.integration.pstn_sim._pstn_support import TABLE, Receiver
    from tests.integration.sip._pages import save_fax_tiff, text_page
else:
    from _pstn_support import TABLE, Receiver

    from tests.integration.sip._pages import save_fax_tiff, text_page


@pytest.fixture(scope="module")
def pace(request: pytest.FixtureRequest) -> float:
    return float(getattr(request.module, "PACE", 20))


@pytest.fixture(scope="module")
def jitter_prefill(request: pytest.FixtureRequest) -> int | None:
    value = getattr(request.module, "JITTER_PREFILL", None)
    return int(value) if value is not None else None


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "three.tif"
    return save_fax_tiff(path, [text_page(n) for n in (1, 2, 3)])


@pytest.fixture(scope="module")
async def receiver(
    tmp_path_factory: pytest.TempPathFactory, pace: float, jitter_prefill: int | None
) -> AsyncIterator[Receiver]:
    ua = await UserAgent.start(pace=pace, jitter_prefill=jitter_prefill)
    rx = Receiver(ua, tmp_path_factory.mktemp("inbound"))
    ua.listen(rx.handle)
    yield rx
    await ua.close()


@pytest.fixture
def fresh_receiver(receiver: Receiver) -> Receiver:
    receiver.mode = "receive"
    receiver.unavailable = 0
    while not receiver.results.empty():
        receiver.results.get_nowait()
    return receiver


@pytest.fixture(scope="module")
async def sim(
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
    pace: float,
    jitter_prefill: int | None,
) -> AsyncIterator[RunningSimulator]:
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=pace,
        pstn_sim_data_dir=tmp_path_factory.mktemp("pstn-sim"),
        pstn_sim_inbound_uri=receiver.ua.uri,
        pstn_sim_answer_timeout_s=10,
        pstn_sim_jitter_prefill=jitter_prefill,
    )
    async with running(settings, TABLE) as simulator:
        yield simulator


@pytest.fixture(scope="module")
async def caller(pace: float, jitter_prefill: int | None) -> AsyncIterator[UserAgent]:
    ua = await UserAgent.start(pace=pace, jitter_prefill=jitter_prefill)
    yield ua
    await ua.close()


@pytest.fixture(autouse=True)
def _clean_log(sim: RunningSimulator) -> None:
    sim.calls.reset()
