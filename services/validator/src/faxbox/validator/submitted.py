"""``FaxSubmitted`` → one ``OutboundFaxRequested`` per number, or one ``OutboundFaxRejected``.

The submission's own fax id is its idempotency key, as a mail's is: the handler returns
its decision and the outbox records every message under that key before any is
published; a redelivery finds the recorded decision and, while it is still owed,
publishes it again (same ``message_id``). The document is read from
where the portal stored it; accepted, the fax TIFF is stored under the submission's fax
id and every fax references it, and the original is the portal's upload (copied into
this month's bucket when a resend reuses an older month's document, so each month's
retention keeps what its faxes need). Rejected, the rejection names every fax the
portal answered with (``fax_ids``), so each of them reads "rejected" with the reasons.
"""

from __future__ import annotations

import logging

from faxbox.shared.bus import PermanentError
from faxbox.shared.contracts import (
    DocumentRef,
    FaxSubmitted,
    Message,
    OutboundFaxRejected,
    RejectionCode,
    RejectionReason,
)
from faxbox.shared.outbox import Decided
from faxbox.shared.store import DocumentCorrupt, NotFound
from faxbox.validator.decision import Decision, Outcome, recipient_fax_id
from faxbox.validator.handlers import (
    Deps,
    decided,
    decided_before,
    decision_message_id,
    fax_requests,
    stored_document,
)
from faxbox.validator.submission import evaluate_submission

log = logging.getLogger(__name__)


async def _document(deps: Deps, ref: DocumentRef) -> bytes | None:
    try:
        return await deps.documents.get(ref)
    except NotFound:
        return None
    except DocumentCorrupt as exc:
        raise PermanentError(str(exc)) from exc


async def _original(deps: Deps, message: FaxSubmitted, data: bytes) -> DocumentRef:
    ref = message.document
    if ref.month == message.month and ref.account_id == message.account_id:
        return ref
    return await stored_document(
        deps,
        message.account_id,
        message.month,
        message.fax_id,
        "original",
        data,
        ref.filename,
        ref.content_type,
    )


async def _requested(
    message: FaxSubmitted, decision: Decision, data: bytes, deps: Deps, sender_email: str
) -> tuple[Message, ...]:
    original = await _original(deps, message, data)
    stored_under = (message.account_id, message.month, message.fax_id)
    return await fax_requests(deps, decision, stored_under, sender_email, original)


def _rejected(message: FaxSubmitted, decision: Decision, sender_email: str) -> Message:
    owner = decision.owner
    assert owner is not None
    return OutboundFaxRejected(
        message_id=decision_message_id(message.fax_id),
        fax_id=message.fax_id,
        account_id=message.account_id,
        month=message.month,
        user_id=owner.id,
        faxbox_id=message.faxbox_id,
        sender_email=sender_email,
        destination_raw=decision.destination_raw or ", ".join(message.numbers),
        reasons=decision.reasons,
        raw=message.document,
        fax_ids=tuple(recipient_fax_id(message.fax_id, i) for i in range(len(message.numbers))),
    )


def _unavailable(message: FaxSubmitted) -> RejectionReason:
    return RejectionReason(
        code=RejectionCode.document_unavailable,
        message=f"The document {message.document.filename} is no longer stored (its month "
        "was removed by retention), so it cannot be faxed; send it again as a new fax.",
    )


async def on_fax_submitted(message: FaxSubmitted, deps: Deps) -> Decided | None:
    earlier = await deps.decisions.get(message.fax_id)
    if earlier is not None:
        return decided_before(earlier)
    data = await _document(deps, message.document)
    decision = await evaluate_submission(
        message,
        data or b"",
        directory=deps.directory,
        counters=deps.counters,
        renderer=deps.renderer,
        limits=deps.limits,
        day=message.occurred_at.date(),
    )
    if decision.outcome is Outcome.IGNORED:
        assert decision.ignored is not None
        raise PermanentError(f"{decision.ignored.code}: {decision.ignored.message}")
    submitter = await deps.directory.user(message.user_id)
    sender_email = (
        submitter.email if submitter else (decision.owner.email if decision.owner else "")
    )
    if data is None:
        decision = Decision(
            Outcome.REJECTED,
            None,
            reasons=(_unavailable(message),),
            account=decision.account,
            faxbox=decision.faxbox,
            owner=decision.owner,
            destination_raw=decision.destination_raw,
        )
    if decision.outcome is Outcome.ACCEPTED:
        assert data is not None
        outcome = await _requested(message, decision, data, deps, sender_email)
    else:
        outcome = (_rejected(message, decision, sender_email),)
    return decided(message.fax_id, decision, outcome, "submission ")
