"""The history-writer's interfaces: the handler records changes, the recorder hands
batches of them to a sink. ``adapters`` has the real ones, the unit tests their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from faxbox.history.changes import Change


class Recorder(Protocol):
    async def record(self, change: Change) -> None: ...


class ChangeSink(Protocol):
    async def apply(self, changes: Sequence[Change]) -> None: ...
