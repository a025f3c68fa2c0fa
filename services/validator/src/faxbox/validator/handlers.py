"""``MailReceived`` → one ``OutboundFaxRequested`` per number, or one ``OutboundFaxRejected``
(or nothing).

Accepted: the document is rendered and stored once (under the mail's fax id) and every
fax references the same documents; each fax has its own fax id (see ``decision``).
Rejected: one message under the mail's fax id, every reason in it. Copies of one mail
that come to the same rejection send it once: the first claims
``<mailbox>|<identity>|rejected|<digest of the reasons>``.

Idempotent on the mail's fax id: the handler returns every message of its decision under
that key, and the runtime records them (``faxbox.shared.outbox``) before any is
published. A redelivery finds them there: if all were confirmed, nothing more happens;
if not, those same messages (same ``message_id`` each) are returned to be published
again, so downstream services, which deduplicate on it, see one decision. Work done
before a crash is not repeated either: claims and page reservations are keyed by fax id
and stored documents are found again by fax id and role.

Settling: returning acks (once the broker confirmed the decision); unknown senders and
mail for no account raise ``PermanentError`` (dead-letter with the reason: admins see
it, the sender hears nothing); database or broker trouble propagates and is retried.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Final, Protocol

from faxbox.shared.bus import PermanentError
from faxbox.shared.contracts import (
    DocumentRef,
    FaxSettings,
    MailReceived,
    Message,
    OutboundFaxRejected,
    OutboundFaxRequested,
    RetryPolicy,
    month_of,
)
from faxbox.shared.outbox import Decided, DecisionStore, Recorded
from faxbox.shared.ports import Documents
from faxbox.shared.store import DocumentCorrupt, Faxbox, NotFound
from faxbox.validator.decision import Decision, Limits, Outcome, evaluate
from faxbox.validator.mime import DocumentKind
from faxbox.validator.ports import (
    Claims,
    Directory,
    PageCounters,
    Renderer,
    SubmissionDirectory,
)

log = logging.getLogger(__name__)

_DECISION_NAMESPACE: Final = uuid.UUID("6f1d2a8e-6a53-4f0e-9b0e-2f6c1f0b8a11")
_CONTENT_TYPES: Final = {DocumentKind.PDF: "application/pdf", DocumentKind.TIFF: "image/tiff"}
_MAX_ATTEMPTS_ON_CONTRACT: Final = 10


class FullDirectory(Directory, SubmissionDirectory, Protocol):
    """Lookups by realm and sender (mail) and by id (submissions)."""


@dataclass(frozen=True, slots=True)
class Deps:
    directory: FullDirectory
    counters: PageCounters
    renderer: Renderer
    documents: Documents
    decisions: DecisionStore
    limits: Limits
    claims: Claims


def decision_message_id(fax_id: str) -> str:
    """The same id for every delivery of one mail, even if the ledger were lost."""
    return uuid.uuid5(_DECISION_NAMESPACE, f"validator-decision:{fax_id}").hex


async def _load_raw(documents: Documents, ref: DocumentRef) -> bytes:
    try:
        return await documents.get(ref)
    except NotFound as exc:
        raise PermanentError(f"the raw mail {ref.file_id} is not in the store: {exc}") from exc
    except DocumentCorrupt as exc:
        raise PermanentError(str(exc)) from exc


async def stored_document(
    deps: Deps,
    account_id: str,
    month: str,
    fax_id: str,
    role: str,
    data: bytes,
    filename: str,
    content_type: str,
) -> DocumentRef:
    existing = await deps.documents.find(account_id, month, fax_id, role)
    if existing is not None:
        return existing
    return await deps.documents.put(
        account_id,
        month,
        data,
        filename=filename,
        content_type=content_type,
        metadata={"fax_id": fax_id, "role": role},
    )


async def _requested(message: MailReceived, decision: Decision, deps: Deps) -> tuple[Message, ...]:
    account, faxbox, owner = decision.account, decision.faxbox, decision.owner
    assert account
    assert faxbox
    assert owner
    assert decision.recipients
    assert decision.mail
    month = month_of(message.received_at)
    mail_fax_id = message.fax_id
    # Merged documents: every original is kept (role original-N); the message names the
    # first, as it names one fax TIFF. Stored once, under the mail's fax id, for all.
    originals: list[DocumentRef] = []
    for index, doc in enumerate(decision.documents):
        assert doc.kind is not None
        role = "original" if index == 0 else f"original-{index + 1}"
        name = doc.filename or f"document.{doc.kind.value}"
        originals.append(
            await stored_document(
                deps, account.id, month, mail_fax_id, role, doc.data, name, _CONTENT_TYPES[doc.kind]
            )
        )
    return await fax_requests(
        deps,
        decision,
        (account.id, month, mail_fax_id),
        decision.mail.sender or owner.email,
        originals[0],
        source_message_id=decision.mail.message_id,
        # What opens require-flags carriers to this fax (see the transmitter).
        route_flags=tuple(faxbox.route_flags),
    )


async def fax_requests(
    deps: Deps,
    decision: Decision,
    stored_under: tuple[str, str, str],
    sender_email: str,
    original: DocumentRef,
    *,
    source_message_id: str | None = None,
    route_flags: tuple[str, ...] = (),
) -> tuple[Message, ...]:
    """An accepted decision's requests: its fax TIFF stored (``stored_under``: the
    account, month and fax id of the mail or submission), then one fax of it to each of
    its numbers."""
    faxbox, owner = decision.faxbox, decision.owner
    assert faxbox is not None
    assert owner is not None
    assert decision.pages is not None
    assert decision.fax_tiff is not None
    account_id, month, fax_id = stored_under
    fax_tiff = await stored_document(
        deps, account_id, month, fax_id, "fax_tiff", decision.fax_tiff, "fax.tif", "image/tiff"
    )
    settings, policy = fax_settings(faxbox, decision.caller_id)
    requests: list[Message] = []
    for recipient in decision.recipients:
        assert recipient.fax_id is not None
        requests.append(
            OutboundFaxRequested(
                message_id=decision_message_id(recipient.fax_id),
                fax_id=recipient.fax_id,
                account_id=account_id,
                month=month,
                user_id=owner.id,
                faxbox_id=faxbox.id,
                sender_email=sender_email,
                destination=recipient.number.e164,
                settings=settings,
                retry_policy=policy,
                original=original,
                fax_tiff=fax_tiff,
                pages=decision.pages,
                source_message_id=source_message_id,
                route_flags=route_flags,
            )
        )
    return tuple(requests)


def fax_settings(faxbox: Faxbox, caller_id: str | None) -> tuple[FaxSettings, RetryPolicy]:
    """How the faxbox's faxes are presented (``caller_id`` as decided: one it owns) and
    redialled, as the request carries it."""
    retry = faxbox.retry
    settings = FaxSettings(
        caller_id=caller_id,
        identity=faxbox.identity,
        header_name=faxbox.header_name,
        timezone=faxbox.timezone,
        resolution=faxbox.resolution,
        header_format=faxbox.header_format,
    )
    policy = RetryPolicy(
        attempts=min(retry.attempts, _MAX_ATTEMPTS_ON_CONTRACT), delays_s=tuple(retry.delays_s)
    )
    return settings, policy


def _rejected(message: MailReceived, decision: Decision) -> Message:
    account, faxbox, owner = decision.account, decision.faxbox, decision.owner
    assert account
    assert owner
    assert decision.mail
    return OutboundFaxRejected(
        message_id=decision_message_id(message.fax_id),
        fax_id=message.fax_id,
        account_id=account.id,
        month=month_of(message.received_at),
        user_id=owner.id,
        faxbox_id=faxbox.id if faxbox else None,
        sender_email=decision.mail.sender or owner.email,
        destination_raw=decision.destination_raw or "",
        reasons=decision.reasons,
        source_message_id=decision.mail.message_id,
        raw=message.raw,
    )


def rejection_claim_key(mailbox: str, identity: str, decision: Decision) -> str:
    said = "\n".join(f"{r.code.value}:{r.message}" for r in decision.reasons)
    return f"{mailbox}|{identity}|rejected|{hashlib.sha256(said.encode()).hexdigest()[:32]}"


async def on_mail_received(message: MailReceived, deps: Deps) -> Decided | None:
    earlier = await deps.decisions.get(message.fax_id)
    if earlier is not None:
        return decided_before(earlier)

    raw = await _load_raw(deps.documents, message.raw)
    decision = await evaluate(
        raw,
        directory=deps.directory,
        counters=deps.counters,
        renderer=deps.renderer,
        limits=deps.limits,
        day=message.received_at.date(),
        reserve_for=message.fax_id,
        claims=deps.claims,
        mailbox=message.mailbox,
        oversize=message.oversize,
    )
    if decision.outcome is Outcome.IGNORED:
        assert decision.ignored is not None
        if decision.ignored.dead_letter:
            raise PermanentError(f"{decision.ignored.code}: {decision.ignored.message}")
        log.info("ignored: %s", decision.ignored.message)
        return None

    if decision.outcome is Outcome.ACCEPTED:
        outcome = await _requested(message, decision, deps)
    else:
        assert decision.mail is not None
        key = rejection_claim_key(message.mailbox, decision.mail.identity, decision)
        if not await deps.claims.claim(key, message.fax_id):
            log.info("another copy of this mail was rejected for the same reasons; not again")
            return None
        outcome = (_rejected(message, decision),)
    return decided(message.fax_id, decision, outcome)


def decided(key: str, decision: Decision, outcome: tuple[Message, ...], what: str = "") -> Decided:
    """The decision to record under ``key`` (a mail's or a submission's fax id), logged."""
    log.info(
        "%sdecided %s",
        what,
        decision.outcome.value,
        extra={
            "reasons": [r.code.value for r in decision.reasons],
            "numbers": list(decision.numbers),
            "fax_ids": [m.fax_id for m in outcome],
        },
    )
    return Decided(key, outcome)


def decided_before(earlier: Recorded) -> Recorded | None:
    names = ", ".join(type(m).__name__ for m in earlier.messages)
    if not earlier.owed:
        log.info("decided and published before (%s); nothing to do", names)
        return None
    # Decided, but the confirms may never have come: the same messages once more.
    log.info("decided before (%s); publishing that decision again", names)
    return earlier
