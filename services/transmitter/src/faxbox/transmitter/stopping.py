"""Stopping a task that may not stop when told.

A cancellation can be swallowed: on Python 3.11 an ``asyncio.timeout`` expiring at the
moment of the cancel turns it into a ``TimeoutError``, which a caller suppressing
``Exception`` then drops; a database driver's own retry loop can do the same. A lease
keeper that ate its cancellation once kept renewing the lease of a call that was over,
and the fax never ended (benchmarks/overload.py, 1 call of 400). So a task is cancelled
again while it goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

CANCEL_AGAIN_S: Final = 0.5


async def stop(task: asyncio.Task[Any], *, within_s: float | None = None) -> bool:
    """Cancel ``task``, again every ``CANCEL_AGAIN_S`` while it goes on; whether it ended
    within ``within_s`` (None: it is waited for as long as it takes). What the task
    raised instead of ending cancelled is the caller's to retrieve."""
    loop = asyncio.get_running_loop()
    deadline = None if within_s is None else loop.time() + within_s
    while not task.done():
        left = CANCEL_AGAIN_S if deadline is None else deadline - loop.time()
        if left <= 0:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(CANCEL_AGAIN_S, left))
    return True
