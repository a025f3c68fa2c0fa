"""Crash-injection test hooks, all behind one setting: ``FAXBOX_TEST_CRASH_AT=<service>.<point>``.

Unset (the default) no hook is armed. Set, the named service exits abruptly at the named
point, with that point's exit status so a test can tell the hook from a real crash; every
other service ignores it, so one environment can serve a whole stack. A value naming no
known point is refused when the settings are read, that is at start-up, never silently
ignored. The points are:

``mail-poller.after_publish``
    a ``MailReceived`` is confirmed and recorded as published, the mail not yet moved
    (status 137, as a SIGKILL would leave it);
``transmitter.before_ack``
    a ``FaxSent`` is confirmed by the broker, the request not yet acknowledged (status 75);
``transmitter.after_last_confirmation``
    the far end's confirmation of the fax's last page is written to the job, the call
    not yet ended nor its outcome recorded (status 137, as a SIGKILL would leave it);
``inbound.after_last_page``
    the last page of a received fax (the sender's end of document) is on disk and
    noted, its confirmation not yet sent, nothing stored (status 137).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Final, NoReturn

log = logging.getLogger(__name__)

SETTING: Final = "FAXBOX_TEST_CRASH_AT"

# "<service>.<point>" -> the exit status of the crash
EXIT_STATUS: Final[Mapping[str, int]] = {
    "mail-poller.after_publish": 137,
    "transmitter.before_ack": 75,
    "transmitter.after_last_confirmation": 137,
    "inbound.after_last_page": 137,
}


def parse(value: str | None) -> str | None:
    """The crash point ``value`` names (None: none); ValueError for one nobody knows."""
    if value is None or not value.strip():
        return None
    point = value.strip()
    if point not in EXIT_STATUS:
        known = ", ".join(sorted(EXIT_STATUS))
        raise ValueError(
            f"{SETTING}={value!r} names no crash point; it is <service>.<point>, one of: {known}"
        )
    return point


def armed(crash_at: str | None, service: str, point: str) -> bool:
    """Whether the setting asks ``service`` to crash at ``point``."""
    name = f"{service}.{point}"
    if name not in EXIT_STATUS:  # a typo in the service's own code, not in the setting
        raise ValueError(f"unknown crash point {name!r}")
    return crash_at == name


def crash(service: str, point: str) -> NoReturn:
    """Exit the process now, without cleaning up, as a killed process would."""
    name = f"{service}.{point}"
    log.critical("%s=%s: exiting here (test hook)", SETTING, name)
    logging.shutdown()
    os._exit(EXIT_STATUS[name])
