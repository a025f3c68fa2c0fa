from __future__ import annotations

import pytest

from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings, ServiceSettings
from faxbox.shared.wiring import infrastructure

pytestmark = pytest.mark.integration


async def test_infrastructure_connects_both_and_reports_health(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> None:
    settings = ServiceSettings(**broker_settings.model_dump(), **mongo_settings.model_dump())
    runtime = Runtime("demo")
    async with infrastructure(settings, runtime) as infra:
        runtime.ready = True
        healthy, checks = await runtime.health()
        assert healthy
        assert checks == {"broker": True, "database": True}
        await infra.bus.declare_service("validator")
    assert not infra.bus.is_connected
    healthy, checks = await runtime.health()
    assert not healthy
    assert checks["broker"] is False
