"""Notes a delivery carries beside its contract, from one handling to the next.

A handler that learnt something the next handling of the same message must know, at a
moment the database that would keep it is away, raises ``RetryLater(..., notes=...)``:
the bus parks the copy with the notes in its headers (``x-faxbox-note-<name>``), the
copy confirmed by the broker before the delivery in hand is acked, so the notes are as
durable as the message itself. When the copy comes back, :func:`carried` gives them to
its handler. A note stays with the message on every later retry, redrive and dead
letter; a later note of the same name replaces it.

The transmitter's use: pages the far end confirmed during a database outage travel with
the job, so whoever dials it next neither loses them nor sends them twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final

HEADER_PREFIX: Final = "x-faxbox-note-"

_NONE: Final[Mapping[str, str]] = MappingProxyType({})
_CARRIED: ContextVar[Mapping[str, str]] = ContextVar("faxbox_carried_notes", default=_NONE)


def carried() -> Mapping[str, str]:
    """The notes the delivery being handled came with (empty outside a handler)."""
    return _CARRIED.get()


@contextlib.contextmanager
def carrying(notes: Mapping[str, str]) -> Iterator[None]:
    """Hand ``notes`` to the handler called inside the block."""
    token = _CARRIED.set(MappingProxyType(dict(notes)))
    try:
        yield
    finally:
        _CARRIED.reset(token)


def from_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    notes: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if not key.startswith(HEADER_PREFIX):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            notes[key.removeprefix(HEADER_PREFIX)] = value
    return notes


def to_headers(notes: Mapping[str, str]) -> dict[str, str]:
    return {HEADER_PREFIX + name: value for name, value in notes.items()}
