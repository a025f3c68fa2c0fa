"""In-memory stand-ins for Faxbox's own ports, for unit tests: no servers, same rules.

- :class:`MemoryBus`: routes by ``faxbox.shared.routing.SUBSCRIPTIONS`` and settles by
  ``faxbox.shared.policy.decide``, like the real bus; ``join()`` runs until every queue is
  empty, ``dead_letters`` and ``retries`` keep what was not acked.
- :class:`MemoryPublisher`: every message published, and failures on demand (the
  ``faxbox.shared.ports.Publisher`` port).
- :class:`MemoryDecisionStore`: the outbox's decisions (``faxbox.shared.outbox``).
- :class:`MemoryDocuments`: documents by reference, as GridFS holds them (the
  ``faxbox.shared.ports.Documents`` port).
- :class:`ManualClock`: a time that moves only when told.
"""

from faxbox.shared.testing.bus import DeadLettered, MemoryBus, Parked
from faxbox.shared.testing.clock import ManualClock
from faxbox.shared.testing.decisions import MemoryDecisionStore
from faxbox.shared.testing.documents import MemoryDocuments
from faxbox.shared.testing.publisher import MemoryPublisher

__all__ = [
    "DeadLettered",
    "ManualClock",
    "MemoryBus",
    "MemoryDecisionStore",
    "MemoryDocuments",
    "MemoryPublisher",
    "Parked",
]
