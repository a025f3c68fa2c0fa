"""The history-writer's sink in memory: each fax's document, as its upserts leave it.

Every change is an upsert whose operators commute (see ``faxbox.history.changes``), so
the merge of all of a document's changes is what the database ends with; the document
is that merge read back: ``$set``, ``$min`` and ``$max`` fields as they are, each
``$addToSet`` as its list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faxbox.history.changes import Change, merge_changes

Doc = dict[str, Any]


class MemoryHistory:
    def __init__(self) -> None:
        self.changes: dict[tuple[str, str, str], list[Change]] = {}

    async def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self.changes.setdefault(change.key, []).append(change)

    async def record(self, change: Change) -> None:
        await self.apply([change])

    def document(self, account_id: str, month: str, fax_id: str) -> Doc | None:
        changes = self.changes.get((account_id, month, fax_id))
        if not changes:
            return None
        merged = merge_changes(changes)
        # Equal ranks with other contents stay apart: the last one stands for the server's $max.
        doc: Doc = {"_id": fax_id}
        for change in merged:
            for op, fields in change.upsert.items():
                for name, value in fields.items():
                    doc[name] = value["$each"] if op == "$addToSet" else value
        return doc
