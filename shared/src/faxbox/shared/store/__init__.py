"""MongoDB (or FerretDB) storage for Faxbox, through PyMongo's async API."""

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store.cursors import Page
from faxbox.shared.store.documents import DocumentStore
from faxbox.shared.store.errors import (
    CallerIdNotOwned,
    DocumentCorrupt,
    DuplicateCarrier,
    DuplicateEmail,
    DuplicateRealm,
    InvalidCursor,
    NotFound,
    NumberAlreadyAssigned,
    NumberHeldByAnotherAccount,
    NumberInUse,
    NumberNotInInventory,
    StoreError,
)
from faxbox.shared.store.history import HistoryStore
from faxbox.shared.store.models import (
    Account,
    AccountNumber,
    Carrier,
    Faxbox,
    NumberAssignment,
    RetryPolicy,
    Role,
    SenderAuth,
    User,
    new_id,
)
from faxbox.shared.store.records import FaxStatus, HistoryRecord, StatusRank
from faxbox.shared.store.retention import apply_retention, drop_month, stored_months
from faxbox.shared.store.store import Store

__all__ = [
    "Account",
    "AccountNumber",
    "CallerIdNotOwned",
    "Carrier",
    "DocumentCorrupt",
    "DocumentRef",
    "DocumentStore",
    "DuplicateCarrier",
    "DuplicateEmail",
    "DuplicateRealm",
    "FaxStatus",
    "Faxbox",
    "HistoryRecord",
    "HistoryStore",
    "InvalidCursor",
    "NotFound",
    "NumberAlreadyAssigned",
    "NumberAssignment",
    "NumberHeldByAnotherAccount",
    "NumberInUse",
    "NumberNotInInventory",
    "Page",
    "RetryPolicy",
    "Role",
    "SenderAuth",
    "StatusRank",
    "Store",
    "StoreError",
    "User",
    "apply_retention",
    "drop_month",
    "new_id",
    "stored_months",
]
