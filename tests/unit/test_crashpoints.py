"""FAXBOX_TEST_CRASH_AT: one setting for every crash hook, refused at start-up when wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from faxbox.shared import crashpoints
from faxbox.shared.settings import RunnerSettings


def test_unset_arms_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crashpoints.SETTING, raising=False)
    settings = RunnerSettings()
    assert settings.test_crash_at is None
    assert not crashpoints.armed(settings.test_crash_at, "transmitter", "before_ack")


def test_a_point_arms_that_service_at_that_point_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crashpoints.SETTING, "transmitter.before_ack")
    settings = RunnerSettings()
    assert crashpoints.armed(settings.test_crash_at, "transmitter", "before_ack")
    assert not crashpoints.armed(settings.test_crash_at, "mail-poller", "after_publish")


@pytest.mark.parametrize(
    "value", ["transmitter", "transmitter.after_ack", "mailpoller.after_publish"]
)
def test_a_value_naming_no_point_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(crashpoints.SETTING, value)
    with pytest.raises(ValidationError) as raised:
        RunnerSettings()
    message = str(raised.value)
    assert f"FAXBOX_TEST_CRASH_AT={value!r} names no crash point" in message
    assert (
        "mail-poller.after_publish, transmitter.after_last_confirmation, "
        "transmitter.before_ack" in message
    )


def test_a_point_the_code_asks_for_must_exist() -> None:
    with pytest.raises(ValueError, match=r"unknown crash point 'transmitter\.befor_ack'"):
        crashpoints.armed("transmitter.before_ack", "transmitter", "befor_ack")
