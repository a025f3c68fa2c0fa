"""The outbox's decision store in memory: first record of a key wins, owed until forgotten."""

from __future__ import annotations

from datetime import UTC, datetime

from faxbox.shared.outbox import Decided, Recorded


class MemoryDecisionStore:
    def __init__(self) -> None:
        self.decisions: dict[str, Decided] = {}
        self.owed_since: dict[str, datetime] = {}
        # Raised by the next records (forgets), one each, as a database going away would.
        self.failures: list[Exception] = []
        self.forget_failures: list[Exception] = []

    async def get(self, key: str) -> Recorded | None:
        decided = self.decisions.get(key)
        if decided is None:
            return None
        return Recorded(key, decided.messages, owed=key in self.owed_since)

    async def record(self, decided: Decided) -> Recorded:
        if self.failures:
            raise self.failures.pop(0)
        owed_before = decided.key in self.owed_since
        standing = self.decisions.get(decided.key)
        if standing is not None and not owed_before:
            # As the database: the standing decision was confirmed, a late record owes nothing.
            return Recorded(decided.key, standing.messages, decided.retry, owed=False)
        self.owed_since.setdefault(decided.key, datetime.now(UTC))
        standing = self.decisions.setdefault(decided.key, decided)
        return Recorded(decided.key, standing.messages, decided.retry)

    async def forget(self, key: str) -> None:
        if self.forget_failures:
            raise self.forget_failures.pop(0)
        self.owed_since.pop(key, None)

    async def owed(self, older_than: datetime) -> list[Recorded]:
        return [
            Recorded(key, self.decisions[key].messages)
            for key, since in self.owed_since.items()
            if since < older_than and key in self.decisions
        ]
