"""Which vhosts deploy/local/up deletes as stale scratch vhosts, and which it keeps."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import SCRATCH_VHOST_DESCRIPTION

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def health() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "deploy" / "local" / "rabbitmq_health.py"
    spec = importlib.util.spec_from_file_location("rabbitmq_health", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tests_and_the_tidy_up_agree_on_the_description(health: ModuleType) -> None:
    assert health.SCRATCH_DESCRIPTION == SCRATCH_VHOST_DESCRIPTION


def test_a_scratch_vhost_is_kept_for_two_hours(health: ModuleType) -> None:
    young = {"name": "chaos-1a2b3c", "description": health.scratch_description(NOW - 7000)}
    old = {"name": "chaos-1a2b3c", "description": health.scratch_description(NOW - 7300)}
    assert not health.is_stale_scratch(young, NOW)
    assert health.is_stale_scratch(old, NOW)


def test_vhosts_of_other_people_are_never_stale(health: ModuleType) -> None:
    for vhost in (
        {"name": "/", "description": "Default virtual host"},
        {"name": "production", "description": ""},
        {"name": "test-1a2b3c", "description": "a test vhost someone made by hand"},
        {"name": "faxbox", "description": f"{SCRATCH_VHOST_DESCRIPTION} not-a-time"},
    ):
        assert not health.is_stale_scratch(vhost, NOW), vhost


def test_undescribed_vhosts_of_earlier_test_runs_are_stale(health: ModuleType) -> None:
    for name in ("test-0fd8555b5f", "bench-6ad5f762", "probe-x", "chaos-9f8e"):
        assert health.is_stale_scratch({"name": name, "description": ""}, NOW), name
