"""The real implementations of the transmitter's ports (``ports``):

- ``GridFsDocuments``: the document to send, fetched to a file, and the TIFF a call
  sent, kept once per attempt in the fax's account-month bucket;
- ``SipFaxLine``: fax calls through the process's SIP user agent (``line`` says how a
  call is placed and reported);
- ``MongoCarrierSlots``: the carriers' channel caps, shared by every replica
  (``carriers`` says how a carrier is chosen).

The job ledger's real one, ``jobs.MongoJobLedger``, lives with the job states whose
exclusive steps it implements; the carriers and cancellations come from the shared store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.fax.line import LineSettings, send
from faxbox.fax.line.pace import real_seconds
from faxbox.fax.sip.carrier import carrier_uri, credentials
from faxbox.fax.sip.ua import CallFailed, UserAgent
from faxbox.shared.contracts import DocumentRef, OutboundFaxRequested
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.store import Carrier, Store
from faxbox.shared.store.claims import GenerationLease, Held
from faxbox.transmitter.carriers import Doc, Slot
from faxbox.transmitter.line import (
    CallReport,
    Dial,
    call_settings,
    report_from_outcome,
    sip_failure,
)

log = logging.getLogger(__name__)


class GridFsDocuments:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def fetch(self, ref: DocumentRef, path: Path) -> None:
        with path.open("wb") as f:
            async for chunk in self.store.documents.stream(ref):
                f.write(chunk)

    async def put_transmitted(
        self, message: OutboundFaxRequested, attempt: int, path: Path
    ) -> DocumentRef:
        refs = self.store.documents.refs(message.account_id, message.month)
        key = f"{message.fax_id}:transmitted#{attempt}"
        known = await refs.find_one({"_id": key})
        if known is not None:
            return DocumentRef.model_validate(known["ref"])
        ref = await self.store.documents.put(
            message.account_id,
            message.month,
            await asyncio.to_thread(path.read_bytes),
            filename=f"{message.fax_id}-sent.tif",
            content_type="image/tiff",
            metadata={"fax_id": message.fax_id, "role": "transmitted", "attempt": attempt},
        )
        try:
            await refs.insert_one({"_id": key, "ref": ref.model_dump(mode="json")})
        except DuplicateKeyError:  # two workers on one attempt: the first one's stands
            await self.store.documents.delete(ref)
            known = await refs.find_one({"_id": key})
            if known is None:
                raise
            return DocumentRef.model_validate(known["ref"])
        return ref


class SipFaxLine:
    """Fax calls through ``ua`` (whose ``pace`` is the media clock of every call)."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        answer_timeout_s: float = 60.0,
        max_call_s: float = 1800.0,
        request_t38: bool = True,
        media_silence_s: float = 60.0,
        secrets: SecretBox | None = None,
        t38_delay_s: float = 0.0,
    ) -> None:
        self.ua = ua
        self.secrets = secrets  # opens the carriers' sealed passwords
        self.answer_timeout_s = answer_timeout_s
        self.line = LineSettings(
            silence_s=media_silence_s,
            max_call_s=max_call_s,
            request_t38=request_t38,
            t38_delay_s=t38_delay_s,
        )

    async def transmit(self, dial: Dial) -> CallReport:
        carrier = dial.carrier
        secret = credentials(carrier, self.secrets)
        try:
            call = await self.ua.dial(
                carrier_uri(carrier),
                dial.caller_id or "anonymous",
                dial.destination,
                # Call time: on a faster test clock it passes faster too.
                answer_timeout=real_seconds(self.answer_timeout_s, self.ua.pace),
                credentials=secret,
                proxy=carrier.outbound_proxy,
                offer_t38=carrier.t38_in_invite and self.line.request_t38,
                # A carrier that authenticates us knows us by its own domain.
                from_domain=carrier.domain if secret is not None else None,
                tcp_over_mtu=carrier.tcp_over_mtu,
            )
        except CallFailed as exc:
            log.info("call to %s via %s failed: %s", dial.destination, carrier.name, exc)
            return sip_failure(exc)
        result = await send(
            call,
            call_settings(dial),
            self.line,
            name=dial.fax_id,
            stop=dial.stop,
            on_page_confirmed=dial.on_page_confirmed,
        )
        outcome = result.fax
        log.info(
            "fax call via %s ended: %s, %d/%d pages over %s",
            carrier.name,
            outcome.completion_name,
            outcome.pages_transferred,
            dial.pages_total,
            result.media,
        )
        return report_from_outcome(
            outcome,
            pages_total=dial.pages_total,
            duration_s=result.duration_s,
            media=result.media,
            first_page=dial.first_page,
        )


class MongoCarrierSlots:
    """Channels as generation leases (``faxbox.shared.store.claims``), one per slot.

    A free or expired channel is taken by inserting the slot's next generation, which only
    one replica can do: FerretDB v1 does not make a conditional update exclusive, and two
    calls on a one-channel carrier were seen when slots were taken that way.
    """

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection
        # The slots this process's calls hold, by slot key: under load most busy channels
        # are our own, and acquire skips them without asking the database.
        self._held: dict[str, tuple[GenerationLease, Held]] = {}

    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        for carrier in carriers:
            # Start at a random slot so replicas do not all fight over slot 0.
            offset = random.randrange(carrier.channel_cap)
            for i in range(carrier.channel_cap):
                key = f"{carrier.id}:{(offset + i) % carrier.channel_cap}"
                if key in self._held:
                    continue
                lease = GenerationLease(self.collection, key, timedelta(seconds=lease_s))
                held = await lease.acquire(holder)
                if held is not None:
                    self._held[key] = (lease, held)
                    return Slot(carrier, key, holder)
        return None

    def _ours(self, slot: Slot) -> tuple[GenerationLease, Held] | None:
        entry = self._held.get(slot.key)
        return entry if entry is not None and entry[1].holder == slot.holder else None

    async def renew(self, slot: Slot, until: datetime) -> bool:
        entry = self._ours(slot)
        if entry is None:
            return False
        lease, held = entry
        renewed = await lease.renew(held)
        if renewed is None:
            # Lost: another replica may hold it now; ask the database from now on.
            self._held.pop(slot.key, None)
            return False
        self._held[slot.key] = (lease, renewed)
        return True

    async def release(self, slot: Slot) -> None:
        entry = self._ours(slot)
        if entry is not None:
            del self._held[slot.key]
            lease, held = entry
            await lease.release(held)
