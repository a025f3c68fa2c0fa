"""Wiring: the simulator and its control API, run in-process or as a service.

In-process (tests)::

    settings = PstnSettings(pstn_sim_sip_port=0, pstn_sim_http_port=0, pstn_sim_pace=20)
    async with running(settings) as sim:
        sim.sip_uri, sim.control_url, sim.calls ...
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from faxbox.pstn_sim.control import ControlServer
from faxbox.pstn_sim.scenarios import Scenario
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.pstn_sim.sim import Simulator
from faxbox.shared import runner
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import RunnerSettings, warn_unread_env

SERVICE = "pstn-sim"

log = logging.getLogger("faxbox.pstn_sim")


class RunningSimulator(Simulator):
    control: ControlServer

    @property
    def control_url(self) -> str:
        return self.control.url


@contextlib.asynccontextmanager
async def running(
    settings: PstnSettings, table: tuple[Scenario, ...] | None = None
) -> AsyncIterator[RunningSimulator]:
    """The simulator on its SIP port and the control API on 127.0.0.1, until exit."""
    sim = RunningSimulator(settings, table)
    await sim.start()
    try:
        sim.control = ControlServer(sim, "127.0.0.1", settings.pstn_sim_http_port)
        await sim.control.start()
        log.info("control API on %s", sim.control.url)
        try:
            yield sim
        finally:
            await sim.control.close()
    finally:
        await sim.close()


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: PstnSettings) -> AsyncIterator[None]:
    warn_unread_env(type(settings), os.environ)
    async with running(settings) as sim:
        runtime.add_check("sip", lambda: sim.ua is not None)
        yield


def run(settings: PstnSettings, runner_settings: RunnerSettings | None = None) -> None:
    runner.run(
        SERVICE,
        runner_settings or RunnerSettings(),
        lambda runtime: service(runtime, settings),
    )


def main() -> None:
    """``python -m faxbox.pstn_sim`` (or ``... serve``): the settings from the environment,
    then run."""
    run(PstnSettings())
