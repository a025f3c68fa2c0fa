"""Reliable provisional responses (RFC 3262, ``100rel``): RSeq, RAck and PRACK.

A callee that sends a 1xx reliably puts ``Require: 100rel`` and an ``RSeq`` on it and
resends it (T1, 2·T1, ...) until the caller's PRACK, whose ``RAck`` names that RSeq and
the INVITE's CSeq, arrives; the PRACK gets a 200. We answer PRACKs as a caller whenever
a reliable 1xx arrives, and send our 180 reliably as a callee when the caller requires
it (``Require: 100rel``) or, with ``prefer_100rel``, when it merely supports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from faxbox.fax.sip.message import SipMessage


@dataclass(frozen=True, slots=True)
class RAck:
    rseq: int
    cseq: int
    method: str

    @classmethod
    def parse(cls, value: str | None) -> RAck | None:
        parts = (value or "").split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2].upper())

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def rseq_of(message: SipMessage) -> int | None:
    """The RSeq of a reliable provisional response, None for an unreliable one."""
    if "100rel" not in message.headers.tokens("Require"):
        return None
    value = (message.headers.get("RSeq") or "").strip()
    return int(value) if value.isdigit() else None


def wants_100rel(request: SipMessage, prefer: bool) -> bool:
    """Whether our 1xx to ``request`` must (or, with ``prefer``, may) be reliable."""
    if "100rel" in request.headers.tokens("Require"):
        return True
    return prefer and "100rel" in request.headers.tokens("Supported")


async def resend_until(
    acknowledged: asyncio.Event, send: Callable[[], None], t1: float, limit: float
) -> bool:
    """Call ``send()`` at T1, 2·T1 ... until ``acknowledged`` is set (True) or ``limit``
    seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    interval = t1
    while loop.time() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acknowledged.wait(), interval)
        if acknowledged.is_set():
            return True
        send()
        interval *= 2
    return acknowledged.is_set()
