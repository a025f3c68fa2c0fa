"""Every service's own settings live under its prefix: ``FAXBOX_<SERVICE>_...``.

The services are found on disk (services/<name>/src/faxbox/<package>), so a new one is
checked without being listed here.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from pathlib import Path

import pytest

from faxbox.inbound.service import Settings as InboundSettings
from faxbox.mail_poller.service import Settings as MailPollerSettings
from faxbox.mail_poller.service import timing_of
from faxbox.shared.settings import FaxboxSettings, unread_env_names, warn_unread_env
from faxbox.transmitter.service import Settings as TransmitterSettings

SERVICES = Path(__file__).resolve().parents[2] / "services"


def _settings_classes() -> dict[str, type[FaxboxSettings]]:
    """The settings class of each service package, by package name."""
    found: dict[str, type[FaxboxSettings]] = {}
    for src in sorted(SERVICES.glob("*/src/faxbox/*/__init__.py")):
        package = f"faxbox.{src.parent.name}"
        modules = [m.name for m in pkgutil.iter_modules([str(src.parent)])]
        for name in ("service", "settings"):
            if name not in modules:
                continue
            module = importlib.import_module(f"{package}.{name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, FaxboxSettings) and cls.__module__ == module.__name__:
                    assert package not in found, f"{package}: two settings classes"
                    found[package] = cls
    return found


SETTINGS = _settings_classes()


def test_every_service_has_a_settings_class() -> None:
    packages = {f"faxbox.{p.parent.name}" for p in SERVICES.glob("*/src/faxbox/*/__init__.py")}
    assert set(SETTINGS) == packages


def _shared_fields(cls: type[FaxboxSettings]) -> set[str]:
    return {
        name
        for base in cls.__mro__
        if base.__module__.startswith("faxbox.shared.") and issubclass(base, FaxboxSettings)
        for name in base.model_fields
    }


@pytest.mark.parametrize("package", sorted(SETTINGS))
def test_own_settings_are_under_the_service_prefix(package: str) -> None:
    cls = SETTINGS[package]
    prefix = package.removeprefix("faxbox.") + "_"
    assert cls.service_prefix == prefix
    shared = _shared_fields(cls)
    outside = sorted(
        set(cls.model_fields) - shared - {n for n in cls.model_fields if n.startswith(prefix)}
    )
    assert not outside, f"{package}: settings without the prefix {prefix!r}: {outside}"
    # FAXBOX_<SERVICE>_<SHARED> sets a shared setting for this service: an own field of
    # that name would be set by the same variable.
    clashing = sorted(
        n for n in cls.model_fields if n.startswith(prefix) and n.removeprefix(prefix) in shared
    )
    assert not clashing, f"{package}: {clashing} read the same variable as a shared setting"


def test_a_service_reads_a_shared_setting_under_its_prefix_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FAXBOX_TRANSMITTER_PREFETCH", raising=False)
    monkeypatch.setenv("FAXBOX_PREFETCH", "7")
    assert TransmitterSettings().prefetch == 7
    monkeypatch.setenv("FAXBOX_TRANSMITTER_PREFETCH", "3")
    monkeypatch.setenv("FAXBOX_TRANSMITTER_MAX_CALLS", "9")
    transmitter, inbound = TransmitterSettings(), InboundSettings()
    assert (transmitter.prefetch, transmitter.transmitter_max_calls) == (3, 9)
    assert inbound.prefetch == 7
    assert inbound.inbound_max_calls == InboundSettings.model_fields["inbound_max_calls"].default


def test_a_name_from_before_the_prefix_is_reported_with_the_one_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {
        "FAXBOX_MAX_CALLS": "4",  # before the prefix
        "FAXBOX_SIP__ADVERTISED_ADDRESS": "192.0.2.1",  # part of a nested setting
        "FAXBOX_TRANSMITTER_LINE_PACE": "2",  # the name read
        "FAXBOX_PREFETCH": "8",  # shared
        "FAXBOX_IMAP_HOST": "127.0.0.1",  # no setting of any service
        "MAX_CALLS": "1",
    }
    assert unread_env_names(TransmitterSettings, environ) == {
        "FAXBOX_MAX_CALLS": "FAXBOX_TRANSMITTER_MAX_CALLS",
        "FAXBOX_SIP__ADVERTISED_ADDRESS": "FAXBOX_TRANSMITTER_SIP__ADVERTISED_ADDRESS",
    }
    with caplog.at_level(logging.WARNING, logger="faxbox.shared.settings"):
        warn_unread_env(TransmitterSettings, environ)
    assert [r.getMessage() for r in caplog.records] == [
        "FAXBOX_MAX_CALLS is not read: a service's own settings are under its prefix, "
        "FAXBOX_TRANSMITTER_MAX_CALLS",
        "FAXBOX_SIP__ADVERTISED_ADDRESS is not read: a service's own settings are under its "
        "prefix, FAXBOX_TRANSMITTER_SIP__ADVERTISED_ADDRESS",
    ]


def test_the_mail_pollers_timing_comes_from_its_prefixed_settings() -> None:
    settings = MailPollerSettings(mail_poller_fetch_attempts=3, mail_poller_lease_retry_s=0.5)
    timing = timing_of(settings)
    assert (timing.fetch_attempts, timing.lease_retry_s) == (3, 0.5)
