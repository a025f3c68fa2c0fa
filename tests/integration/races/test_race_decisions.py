"""Twelve notifier replicas recording the outcome of one notification at once, on the
real database, fifty rounds: exactly one decision stands and every replica is handed
that one; it stays owed until confirmed, and late duplicates of a confirmed decision
leave nothing owed behind."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from faxbox.shared.contracts import NotificationKind, NotificationSent
from faxbox.shared.outbox import Decided, Recorded
from faxbox.shared.store.decisions import MongoDecisionStore
from tests.integration.races.conftest import Contenders

pytestmark = pytest.mark.integration

ROUNDS = 50


def sent_mail(fax_id: str, replica: int) -> NotificationSent:
    return NotificationSent(
        fax_id=fax_id,
        account_id="acc1",
        month="202612",
        occurred_at=datetime.now(UTC),
        kind=NotificationKind.sent,
        recipients=("alice@example.com",),
        smtp_message_id=f"<{fax_id}.{replica}@faxbox.test>",
    )


def standing(recorded: list[Recorded], what: str) -> str:
    message_ids = {
        m.smtp_message_id for r in recorded for m in r.messages if isinstance(m, NotificationSent)
    }
    assert len(message_ids) == 1, f"{what}: {len(message_ids)} different decisions handed out"
    return message_ids.pop()


async def test_twelve_notifiers_record_one_decision_per_mail(contenders: Contenders) -> None:
    stores = [MongoDecisionStore(db, "notifier") for db in contenders.dbs]
    decisions, outbox = stores[0].decisions, stores[0].outbox
    for round_ in range(ROUNDS):
        fax_id = f"fax_{uuid.uuid4().hex[:10]}"
        key = f"{fax_id}:sent"
        first = await asyncio.gather(
            *(s.record(Decided(key, (sent_mail(fax_id, i),))) for i, s in enumerate(stores))
        )
        stood = standing(list(first), f"round {round_}")
        assert await decisions.count_documents({"_id": key}) == 1
        # Not confirmed yet: it must stay owed, whoever won which insert.
        assert await outbox.count_documents({"_id": key}) == 1, f"round {round_}: not owed"
        await stores[round_ % len(stores)].forget(key)  # the broker confirmed it
        late = await asyncio.gather(
            *(s.record(Decided(key, (sent_mail(fax_id, 100 + i),))) for i, s in enumerate(stores))
        )
        assert standing(list(late), f"round {round_} late") == stood
        assert await outbox.count_documents({"_id": key}) == 0, f"round {round_}: owed again"
