"""Twelve contenders, each with its own connection to the real database, in a database
of the test's own (dropped afterwards): separate connections, as separate replicas have,
so the server interleaves their requests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

CONTENDERS = 12

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Contenders:
    url: str
    db_name: str
    dbs: list[AsyncDatabase[Doc]]


@pytest.fixture
async def contenders(mongo_url: str) -> AsyncIterator[Contenders]:
    db_name = f"race_{uuid.uuid4().hex[:8]}"
    clients: list[AsyncMongoClient[Doc]] = [AsyncMongoClient(mongo_url) for _ in range(CONTENDERS)]
    try:
        yield Contenders(mongo_url, db_name, [client[db_name] for client in clients])
    finally:
        await clients[0].drop_database(db_name)
        for client in clients:
            await client.close()
