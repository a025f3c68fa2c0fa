"""The history-writer's handler: every fax event becomes one change of its document."""

from __future__ import annotations

import asyncio

from pymongo.errors import PyMongoError

from faxbox.history.changes import changes_for
from faxbox.history.ports import Recorder
from faxbox.shared.bus import TransientError
from faxbox.shared.contracts import FaxMessage


async def record_event(event: FaxMessage, recorder: Recorder) -> None:
    """Returns once the change is in the database (then the message is acked).

    A database error is transient; raised from an outage, the settling policy waits the
    outage out however long it lasts.
    """
    try:
        await asyncio.gather(*(recorder.record(change) for change in changes_for(event)))
    except PyMongoError as exc:
        raise TransientError(f"database write failed: {exc}") from exc
