"""A fixed range of local ports for RTP and UDPTL, so a firewall can open just that.

Each media stream binds one port from the range. Ports are handed out round-robin from
where the last one was taken, so a port just freed is the last to be used again (a late
packet of the previous call lands nowhere), and every port comes back when its stream
closes: the range is reused for ever, never exhausted by a long-running process. RTP
takes even ports (RFC 3550 §11: RTCP, which we neither send nor need, would be the odd
one above). A port something else holds is skipped.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class NoFreePort(OSError):
    """Every port of the range is in use."""


@dataclass
class PortRange:
    """Ports ``low``..``high`` (inclusive) for media streams."""

    low: int
    high: int
    _next: int = field(default=0, init=False)
    _used: set[int] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if not 1024 <= self.low <= self.high <= 65535:
            raise ValueError(f"bad media port range {self.low}-{self.high}")
        self._next = self.low

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """``"20000-20999"``."""
        low, sep, high = text.partition("-")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError(f"media port range {text!r} is not LOW-HIGH")
        return cls(int(low), int(high))

    @property
    def in_use(self) -> int:
        return len(self._used)

    async def bind(self, bind: Callable[[int], Awaitable[None]], *, even: bool = False) -> int:
        """Call ``bind(port)`` on free ports of the range until one succeeds; that port."""
        size = self.high - self.low + 1
        for _ in range(size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if port in self._used or (even and port % 2):
                continue
            try:
                await bind(port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            self._used.add(port)
            return port
        raise NoFreePort(f"no free port in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._used.discard(port)
