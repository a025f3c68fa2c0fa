"""One document of a collection as its model: inserting a new one (which unique field
clashed, when one did), reading one, changing fields of one, with ``NotFound`` when it
is not there (the ``get_*`` half of the stores' naming convention)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.store.errors import NotFound, StoreError
from faxbox.shared.store.models import StoreModel

Doc = dict[str, Any]
M = TypeVar("M", bound=StoreModel)


async def insert_new(
    collection: AsyncCollection[Doc],
    item: M,
    kind: str,
    unique: Mapping[str, Any],
    taken: StoreError,
) -> M:
    """Insert ``item``; ``taken`` if another document has its ``unique`` field already,
    a ``StoreError`` if its ``_id`` is taken."""
    doc = item.to_doc()
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        # FerretDB's duplicate-key error does not say which index clashed
        # (no keyPattern), so look at the data instead.
        if await collection.find_one(dict(unique), {"_id": 1}):
            raise taken from None
        raise StoreError(f"{kind} id {doc['_id']!r} already exists") from None
    return item


async def one(
    collection: AsyncCollection[Doc], query: Mapping[str, Any], model: type[M], kind: str, key: str
) -> M:
    """The document ``query`` finds, as ``model``; ``NotFound(kind, key)`` if none."""
    doc = await collection.find_one(query)
    if doc is None:
        raise NotFound(kind, key)
    return model.from_doc(doc)


async def set_fields(
    collection: AsyncCollection[Doc],
    doc_id: str,
    fields: Mapping[str, Any],
    model: type[M],
    kind: str,
    key: str,
) -> M:
    """``$set`` ``fields`` on the document ``doc_id``, and the document as written.

    A single-document write; not a claim (a conditional update is not exclusive on
    FerretDB v1, see ``claims``).
    """
    written = await collection.find_one_and_update(
        {"_id": doc_id}, {"$set": dict(fields)}, return_document=ReturnDocument.AFTER
    )
    if written is None:
        raise NotFound(kind, key)
    return model.from_doc(written)
