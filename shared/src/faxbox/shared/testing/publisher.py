"""A publisher that keeps what it was given, or fails when a test says so."""

from __future__ import annotations

from typing import Any, TypeVar

from faxbox.shared.contracts import Message

M = TypeVar("M", bound=Message)


class MemoryPublisher:
    def __init__(self) -> None:
        # Every message confirmed, in order; typed loosely, as each test knows what it sent.
        self.published: list[Any] = []
        # What the next publishes do, one entry each: None goes through, an exception is
        # raised, as a broker that does not confirm; once the list is empty, all go through.
        self.failures: list[Exception | None] = []

    async def publish(self, message: Message) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.published.append(message)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.published if isinstance(m, kind)]
