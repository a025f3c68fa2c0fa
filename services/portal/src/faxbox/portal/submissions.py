"""What the portal took in to send: submissions, idempotency keys and Send-page drafts.

- ``fax_submissions``: one document per accepted ``POST /api/v1/faxes`` (or Send page,
  or resend), ``_id`` = its first fax id. It holds the ``FaxSubmitted`` made for it and
  the fax ids it named, so ``GET`` can answer "queued" for a fax the validator has not
  decided yet, and a retried request can record the same message again (same
  ``message_id``; the validator decides once). Whether it was published is the portal
  outbox's business (``portal_decisions``/``portal_outbox``, the same key).
- ``api_idempotency_keys``: ``_id`` = ``<account>:<key>``, the fingerprint of the request
  (faxbox, numbers, document digest) and the submission it made. Taking a key is the
  insert of that ``_id`` (exclusive on FerretDB v1 too); a key older than 24 hours is
  deleted and taken anew.
- ``fax_drafts``: the Send page's upload between its preview and the click on Send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared.contracts import DocumentRef, FaxSubmitted

Doc = dict[str, Any]

SUBMISSIONS: Final = "fax_submissions"
KEYS: Final = "api_idempotency_keys"
DRAFTS: Final = "fax_drafts"
KEY_LIFETIME: Final = timedelta(hours=24)
# A key whose request never recorded its submission (that process died) is free again
# after this long.
ABANDONED_AFTER: Final = timedelta(minutes=2)


class _UsersDocument(BaseModel):
    """What one user of an account handed the portal: its submissions and drafts."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(alias="_id")
    account_id: str
    user_id: str


class Submission(_UsersDocument):
    month: str
    fax_ids: list[str]
    numbers: list[str]
    message: str  # the FaxSubmitted, as JSON
    created_at: datetime

    def submitted(self) -> FaxSubmitted:
        return FaxSubmitted.model_validate_json(self.message)

    def number_of(self, fax_id: str) -> str | None:
        for fax, number in zip(self.fax_ids, self.numbers, strict=True):
            if fax == fax_id:
                return number
        return None


class Draft(_UsersDocument):
    faxbox_id: str
    numbers: list[str]
    document: DocumentRef
    pages: int
    preview_png: bytes = Field(repr=False)
    created_at: datetime


class KeyConflict(Exception):
    """The idempotency key was used for a different request."""


class KeyBusy(Exception):
    """A request with this idempotency key is still being handled."""


@dataclass(frozen=True, slots=True)
class KeyHeld:
    submission_id: str  # the submission the key made (maybe not recorded yet)
    ours: bool  # True: this request took the key now


def base_fax_id(fax_id: str) -> str:
    """The submission a fax id belongs to: ``fax_x-3`` → ``fax_x``."""
    head, _, tail = fax_id.rpartition("-")
    return head if head and tail.isdigit() else fax_id


class SubmissionStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.submissions: AsyncCollection[Doc] = db[SUBMISSIONS]
        self.keys: AsyncCollection[Doc] = db[KEYS]
        self.drafts: AsyncCollection[Doc] = db[DRAFTS]

    async def get(self, submission_id: str) -> Submission | None:
        doc = await self.submissions.find_one({"_id": submission_id})
        return None if doc is None else Submission.model_validate(doc)

    async def of_fax(self, fax_id: str) -> Submission | None:
        submission = await self.get(base_fax_id(fax_id))
        if submission is None or fax_id not in submission.fax_ids:
            return None
        return submission

    async def record(self, submission: Submission) -> None:
        await self.submissions.insert_one(submission.model_dump(by_alias=True))

    async def discard(self, submission_id: str) -> None:
        """A submission whose decision could not be recorded: it was never queued."""
        await self.submissions.delete_one({"_id": submission_id})

    async def take_key(
        self, account_id: str, key: str, fingerprint: str, submission_id: str, now: datetime
    ) -> KeyHeld:
        """This request's hold on the key, or the earlier request's submission."""
        key_id = f"{account_id}:{key}"
        for _ in range(5):
            try:
                await self.keys.insert_one(
                    {
                        "_id": key_id,
                        "fingerprint": fingerprint,
                        "submission_id": submission_id,
                        "created_at": now,
                    }
                )
                return KeyHeld(submission_id, ours=True)
            except DuplicateKeyError:
                held = await self.keys.find_one({"_id": key_id})
            if held is None:
                continue  # deleted in between: take it
            created = _aware(held["created_at"], now)
            if now - created > KEY_LIFETIME:
                await self.keys.delete_one({"_id": key_id, "created_at": held["created_at"]})
                continue
            if held["fingerprint"] != fingerprint:
                raise KeyConflict()
            earlier = str(held["submission_id"])
            if await self.get(earlier) is not None:
                return KeyHeld(earlier, ours=False)
            if now - created > ABANDONED_AFTER:
                await self.keys.delete_one({"_id": key_id, "submission_id": earlier})
                continue
            raise KeyBusy()
        raise KeyBusy()

    async def release_key(self, account_id: str, key: str, submission_id: str) -> None:
        """Give a key back whose request failed before it recorded anything."""
        await self.keys.delete_one({"_id": f"{account_id}:{key}", "submission_id": submission_id})

    # -- drafts of the Send page -------------------------------------------------------

    async def save_draft(self, draft: Draft) -> None:
        await self.drafts.insert_one(draft.model_dump(by_alias=True, mode="python"))

    async def draft(self, draft_id: str, user_id: str) -> Draft | None:
        doc = await self.drafts.find_one({"_id": draft_id})
        if doc is None or doc.get("user_id") != user_id:
            return None
        return Draft.model_validate(doc)

    async def drop_draft(self, draft_id: str) -> None:
        await self.drafts.delete_one({"_id": draft_id})


def _aware(moment: datetime, like: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=like.tzinfo)
