"""``FaxCancelRequested``: end a fax its sender cancelled, if it is not on the line.

The portal has written the cancellation (``fax_cancellations``) before publishing this,
so what matters is only how soon it takes effect:

- the request is still queued, or waiting in a retry queue for its redial: the job is
  taken here (``claim_cancel``) and ends as cancelled now, with the last call's pages;
  the ``FaxFailed`` is returned as the taken attempt's decision, for the outbox to
  record and publish, and the request's copy coming back later republishes it;
- on the line: the worker holding the call sees the cancellation within
  ``cancel_poll_s`` and hangs up (``handler``);
- not here yet (the validator has not decided, or the request is still on its way):
  nothing to do now; the transmitter looks the fax up before every call;
- over (sent, failed): too late, and the portal said so.
"""

from __future__ import annotations

import logging

from faxbox.shared.contracts import FaxCancelRequested, OutboundFaxRequested
from faxbox.shared.outbox import Recorded
from faxbox.transmitter.handlers import Deps, cancelled
from faxbox.transmitter.jobs import TERMINAL, JobState

log = logging.getLogger(__name__)


async def handle_cancel(message: FaxCancelRequested, deps: Deps) -> Recorded | None:
    job = await deps.ledger.get(message.fax_id)
    if job is None:
        log.info("cancel of a fax not here yet: it is looked up before its first call")
        return None
    if job.state in TERMINAL or job.state is JobState.IN_CALL:
        log.info("cancel: the fax is %s; nothing to do here", job.state.value)
        return None
    if job.request_json is None:  # a job from before requests were kept
        log.info("cancel: the request is not kept; it is obeyed when the request comes back")
        return None
    claimed = await deps.ledger.claim_cancel(
        message.fax_id, deps.worker_id, deps.clock(), deps.lease_s
    )
    if claimed is None:
        log.info("cancel: the job moved on meanwhile; the call will see the cancellation")
        return None
    request = OutboundFaxRequested.model_validate_json(job.request_json)
    # Taken as an attempt that makes no call: the calls made are the attempts before it.
    return await cancelled(request, claimed, deps, calls=claimed.attempt - 1)
