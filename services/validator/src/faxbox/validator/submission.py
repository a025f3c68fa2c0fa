"""What becomes of a fax submitted without email (API, portal): accepted or rejected.

The same decision as an email's, from the point where the email's own questions are
answered: there is no mail to read, no realm to find and no From to match, since the
portal authenticated the user and named the faxbox. What follows is shared with
``decision``: the faxbox must be enabled; every number is checked with the account's
rules (one bad number rejects the submission, with a reason for each) and there may be
at most the faxbox's ``max_recipients``; the document has the email limits (size, pages,
page length) and is rendered by the same renderer; the pages of every fax count against
the daily limits, all or none. Accepted, each distinct number is a fax, with the ids
the portal already answered with (``recipient_fax_id``: ``<id>``, ``<id>-2`` ...).

Ignored (dead-lettered, nobody told): a submission naming a faxbox or user that is gone,
or a user who may not send from that faxbox (the portal checked; this is the second
look, at decision time).
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Final

from faxbox.shared.contracts import FaxSubmitted, RejectionCode, RejectionReason
from faxbox.shared.numbers import NumberRefused, normalize
from faxbox.shared.store import Account, Faxbox, Role, User
from faxbox.validator.decision import (
    Decision,
    Ignored,
    Limits,
    Outcome,
    Recipient,
    accepted,
    check_limits,
    number_refusal_code,
    recipient_fax_id,
    render_all,
    switched_off,
)
from faxbox.validator.mime import DocumentKind, Part, PartRole
from faxbox.validator.ports import PageCounters, Renderer, SubmissionDirectory

_KINDS: Final = {"application/pdf": DocumentKind.PDF, "image/tiff": DocumentKind.TIFF}


def _reason(code: RejectionCode, message: str) -> RejectionReason:
    return RejectionReason(code=code, message=message)


def _ignored(code: str, message: str) -> Decision:
    return Decision(Outcome.IGNORED, None, Ignored(code, message, dead_letter=True))


def _may_send(user: User, box: Faxbox) -> bool:
    if user.account_id != box.account_id:
        return False
    return user.id == box.owner_user_id or user.role in (Role.ACCOUNT_ADMIN, Role.RESELLER_ADMIN)


def _numbers(
    submitted: FaxSubmitted, account: Account, box: Faxbox
) -> tuple[list[RejectionReason], tuple[Recipient, ...]]:
    reasons: list[RejectionReason] = []
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for written in submitted.numbers:
        try:
            number = normalize(written, account.number_policy())
        except NumberRefused as refused:
            reasons.append(
                _reason(
                    number_refusal_code(refused),
                    f"The number {written[:64]} cannot be faxed: {refused.message}",
                )
            )
            continue
        if number.e164 not in seen:
            seen.add(number.e164)
            recipients.append(Recipient(written, number))
    count = len(seen) + len(reasons)
    if count > box.max_recipients:
        reasons.insert(
            0,
            _reason(
                RejectionCode.too_many_recipients,
                f"This fax was sent to {count} numbers, but one document can be faxed to at "
                f"most {box.max_recipients} at once. Send it to fewer numbers at a time.",
            ),
        )
    return reasons, tuple(recipients)


def _document(
    submitted: FaxSubmitted, data: bytes, limits: Limits
) -> tuple[list[RejectionReason], Part | None]:
    ref = submitted.document
    name = ref.filename or "the document"
    if not data:
        return [
            _reason(RejectionCode.empty_attachment, f"{name} is empty (0 bytes): send it again.")
        ], None
    if len(data) > limits.max_attachment_bytes:
        mib = limits.max_attachment_bytes / (1024 * 1024)
        return [
            _reason(
                RejectionCode.attachment_too_large,
                f"{name} is {len(data) / (1024 * 1024):.1f} MB; at most {mib:g} MB can be "
                "faxed. Reduce it or split it into parts.",
            )
        ], None
    kind = _KINDS.get(ref.content_type)
    if kind is None:
        return [
            _reason(
                RejectionCode.unsupported_document,
                f"{name} is {ref.content_type}; only PDF and TIFF documents can be faxed.",
            )
        ], None
    return [], Part(PartRole.DOCUMENT, ref.filename, ref.content_type, data, kind)


async def evaluate_submission(
    submitted: FaxSubmitted,
    data: bytes,
    *,
    directory: SubmissionDirectory,
    counters: PageCounters,
    renderer: Renderer,
    limits: Limits,
    day: date,
    reserve: bool = True,
) -> Decision:
    """Decide about one submission; ``data`` is its document's bytes. ``reserve``: the
    pages are reserved against the daily limits when it is accepted."""
    account = await directory.account(submitted.account_id)
    box = await directory.faxbox(submitted.faxbox_id)
    submitter = await directory.user(submitted.user_id)
    if account is None or box is None or box.account_id != account.id:
        return _ignored(
            "unknown_faxbox",
            f"submission {submitted.fax_id}: faxbox {submitted.faxbox_id} is not in account "
            f"{submitted.account_id}",
        )
    owner = submitter if submitter is not None and submitter.id == box.owner_user_id else None
    owner = owner or await directory.user(box.owner_user_id)
    if submitter is None or owner is None or not _may_send(submitter, box):
        return _ignored(
            "not_allowed",
            f"submission {submitted.fax_id}: user {submitted.user_id} may not send from "
            f"faxbox {box.id}",
        )
    rejected = Decision(
        Outcome.REJECTED,
        None,
        account=account,
        faxbox=box,
        owner=owner,
        destination_raw=", ".join(submitted.numbers),
    )
    reasons = switched_off(box, again="send again")
    number_reasons, recipients = _numbers(submitted, account, box)
    reasons.extend(number_reasons)
    document_reasons, part = _document(submitted, data, limits)
    reasons.extend(document_reasons)
    documents = (part,) if part is not None else ()
    tiff: bytes | None = None
    pages: int | None = None
    if part is not None:
        render_reasons, tiff, pages = await render_all(documents, box, renderer, limits)
        reasons.extend(render_reasons)
    decided = dataclasses.replace(
        rejected,
        documents=documents,
        pages=pages,
        recipients=tuple(
            Recipient(r.address, r.number, recipient_fax_id(submitted.fax_id, i))
            for i, r in enumerate(recipients)
        ),
    )
    if pages is None or tiff is None or reasons:
        if pages is not None:
            faxes = max(1, len(recipients))
            reasons.extend(
                await check_limits(counters, owner, account, pages, faxes, day, None, limits)
            )
        return dataclasses.replace(decided, reasons=tuple(reasons))
    reserve_for = submitted.fax_id if reserve else None
    limit_reasons = await check_limits(
        counters, owner, account, pages, len(recipients), day, reserve_for, limits
    )
    if limit_reasons:
        return dataclasses.replace(decided, reasons=tuple(limit_reasons))
    return await accepted(decided, tiff, box, directory, limits)
