"""A publisher that keeps what it was given, or fails when a test says so."""

from __future__ import annotations

from typing import TypeVar

from faxbox.shared.contracts import Message

M = TypeVar("M", bound=Message)


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list[Message] = []
        # Raised by the next publishes, one each, as a broker without a confirm would.
        self.failures: list[Exception] = []

    async def publish(self, message: Message) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append(message)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.published if isinstance(m, kind)]
