"""The short chaos run (CI): 30 emails and 8 inbound faxes while everything is killed.

On the 3-node RabbitMQ cluster (started for the run unless FAXBOX_AMQP_URL lists one,
stopped again if it was not running): every service process, a RabbitMQ node, FerretDB
and pstn-sim are killed and started again once each. What it does and what the figures
mean: tests/chaos/chaos.py; the long run: tests/chaos/run.py. ``FAXBOX_CHAOS_SEED``
replays a run's plan. Figures: test-artifacts/chaos.json.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.chaos.chaos import REPO, Chaos, ChaosConfig, Servers
from tests.chaos.report import failures, report
from tests.support import ImapServer, RabbitServer

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(720)]


async def test_every_fax_ends_once_while_everything_is_killed(
    rabbit: RabbitServer, mongo_url: str, imap_server: ImapServer
) -> None:
    seed = os.environ.get("FAXBOX_CHAOS_SEED")
    config = ChaosConfig(
        emails=30, inbound=8, seed=int(seed) if seed else None, window_s=45, quiesce_timeout_s=240
    )
    # Kept after the run (the service logs are what a failure is read from).
    directory = REPO / "test-artifacts" / "chaos" / f"ci-{time.strftime('%Y%m%d-%H%M%S')}"
    chaos = Chaos(config, Servers(rabbit, mongo_url, imap_server), directory)
    figures = await chaos.run()
    report(figures, REPO / "test-artifacts" / "chaos.json")
    assert not failures(figures), (
        f"seed {figures['seed']}: {failures(figures)}; logs in {directory}"
    )
