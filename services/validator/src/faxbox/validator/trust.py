"""The warning a deciding process gives when no mail server is trusted.

With no ``FAXBOX_VALIDATOR_AUTHSERV_IDS`` no sender can be proven, so every mail to a
faxbox whose sender check is required (the default) is refused. Said once at start-up,
where an operator looks first, rather than only in each refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from faxbox.shared.store import SenderAuth, Store

log = logging.getLogger(__name__)

NO_TRUSTED_SERVER = (
    "FAXBOX_VALIDATOR_AUTHSERV_IDS is empty: no mail server is trusted to prove senders, so "
    "every email to a faxbox with sender_auth=required (the default) is rejected "
    "(sender_not_authenticated). Set it to the authserv-id your receiving mail server "
    "writes into Authentication-Results, e.g. '[\"mx.example.com\"]'."
)


async def warn_without_trusted_servers(store: Store, authserv_ids: Iterable[str]) -> bool:
    """Log the warning if no server is trusted and some faxbox requires proof; True if so."""
    if any(i.strip() for i in authserv_ids):
        return False
    # Faxboxes stored before sender_auth existed have no field and read as required.
    if await store.faxboxes.find_one({"sender_auth": {"$ne": SenderAuth.OFF.value}}, {"_id": 1}):
        log.warning(NO_TRUSTED_SERVER)
        return True
    return False
