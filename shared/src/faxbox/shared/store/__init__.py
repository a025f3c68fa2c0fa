"""MongoDB (or FerretDB) storage for Faxbox, through PyMongo's async API."""

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store.documents import DocumentStore
from faxbox.shared.store.errors import (
    DocumentCorrupt,
    DuplicateCarrier,
    DuplicateEmail,
    DuplicateRealm,
    InvalidCursor,
    NotFound,
    NumberAlreadyAssigned,
    StoreError,
)
from faxbox.shared.store.history import HistoryStore, Page, query_range
from faxbox.shared.store.models import (
    Account,
    Carrier,
    Faxbox,
    NumberAssignment,
    RetryPolicy,
    Role,
    User,
    new_id,
)
from faxbox.shared.store.store import Store

__all__ = [
    "Account",
    "Carrier",
    "DocumentCorrupt",
    "DocumentRef",
    "DocumentStore",
    "DuplicateCarrier",
    "DuplicateEmail",
    "DuplicateRealm",
    "Faxbox",
    "HistoryStore",
    "InvalidCursor",
    "NotFound",
    "NumberAlreadyAssigned",
    "NumberAssignment",
    "Page",
    "RetryPolicy",
    "Role",
    "Store",
    "StoreError",
    "User",
    "new_id",
    "query_range",
]
