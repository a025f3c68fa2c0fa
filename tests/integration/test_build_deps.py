"""``build_deps(infra, settings, ..., **overrides)``: each consuming service makes its
handlers' dependencies from the real broker and database, and an override replaces one
by name, the rest staying real."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from faxbox.history import service as history
from faxbox.history.adapters import BatchingRecorder, MongoHistoryWriter
from faxbox.inbound import service as inbound
from faxbox.notifier import service as notifier
from faxbox.notifier.adapters import StoreDirectory
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store.gridfs_documents import GridFsDocuments
from faxbox.shared.testing import MemoryDecisionStore, MemoryDocuments
from faxbox.shared.wiring import Infrastructure, infrastructure
from faxbox.validator import service as validator
from faxbox.validator.adapters import MongoClaims
from faxbox.webhooks import service as webhooks
from faxbox.webhooks.adapters import HttpSender, StoreWebhooks

pytestmark = pytest.mark.integration


@pytest.fixture
async def infra(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> AsyncIterator[Infrastructure]:
    settings = history.Settings(**broker_settings.model_dump(), **mongo_settings.model_dump())
    async with infrastructure(settings, Runtime("build-deps")) as connected:
        yield connected


async def test_notifier_validator_and_inbound_take_an_override_and_keep_the_rest_real(
    infra: Infrastructure,
) -> None:
    decisions, documents = MemoryDecisionStore(), MemoryDocuments()

    told = notifier.build_deps(infra, notifier.Settings(), decisions=decisions)
    assert isinstance(told.documents, GridFsDocuments)
    assert isinstance(told.directory, StoreDirectory)
    assert told.decisions is decisions
    told = notifier.build_deps(infra, notifier.Settings(), decisions=decisions, documents=documents)
    assert told.documents is documents
    assert isinstance(told.directory, StoreDirectory)

    checked = validator.build_deps(
        infra, validator.Settings(), decisions=decisions, documents=documents
    )
    assert checked.documents is documents
    assert isinstance(checked.claims, MongoClaims)

    received = inbound.build_deps(infra, inbound.Settings(), decisions=decisions)
    assert isinstance(received.documents, GridFsDocuments)
    assert received.directory is infra.store


async def test_webhooks_and_history_build_on_the_real_parts(infra: Infrastructure) -> None:
    settings = webhooks.Settings(secret_key=SecretStr(secrets.token_urlsafe(32)))
    async with httpx.AsyncClient() as http:
        deps = webhooks.build_deps(infra, settings, http=http, busy_retry_s=7)
    assert isinstance(deps.webhooks, StoreWebhooks)
    assert isinstance(deps.sender, HttpSender)
    assert deps.busy_retry_s == 7

    recorder = history.build_deps(infra, history.Settings(history_batch_max=3))
    assert isinstance(recorder, BatchingRecorder)
    assert isinstance(recorder.sink, MongoHistoryWriter)
    assert recorder.max_batch == 3
