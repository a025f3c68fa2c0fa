"""Sending without email: submit, look up, cancel and resend faxes (API and pages alike).

A submission is checked here only as far as an answer can be given at once (whose
faxbox, which numbers under the account's rules, a PDF or TIFF of an allowed size),
stored (the document in the account-month bucket, the ``FaxSubmitted`` in
``fax_submissions``), recorded as the portal's outbox decision under its fax id (the
exclusive ``_id`` insert of ``faxbox.shared.outbox``) and then published. Once recorded,
the fax is queued for good and the request is answered 202 whether or not the broker
confirmed the publish in time: an unconfirmed one stays owed and the portal's outbox
sweep publishes it later, with the same message id. If recording fails, the answer is
503 and nothing was queued. Cancels (``<fax>:cancel``) and webhook replays go the same
way. From there it is the email pipeline's: the
validator decides it with the same rules and limits as an email (and renders it), then
the transmitter, the history, the notifier and the webhooks take over. One fax id per
distinct number (``<id>``, ``<id>-2`` ...), known before the validator decides, as
the validator gives them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from faxbox.portal.access import account_in_scope, faxbox_of, visible_accounts
from faxbox.portal.faxes import get_fax
from faxbox.portal.security import Principal
from faxbox.portal.submissions import (
    KeyBusy,
    KeyConflict,
    Submission,
    SubmissionStore,
)
from faxbox.render import sniff_kind
from faxbox.shared import numbers
from faxbox.shared.contracts import (
    DocumentRef,
    FaxCancelRequested,
    FaxSubmitted,
    month_of,
)
from faxbox.shared.faxview import TERMINAL_STATUSES, ApiStatus, FaxView, from_record
from faxbox.shared.outbox import Decided, Outbox, Recorded
from faxbox.shared.store import Account, Faxbox, NotFound, Store, new_id
from faxbox.shared.store.cancellations import Cancellations
from faxbox.shared.store.records import HistoryRecord

MAX_NUMBERS: Final = 100
_CONTENT_TYPES: Final = {"pdf": "application/pdf", "tiff": "image/tiff"}
_NAMESPACE: Final = uuid.UUID("3d6f1c2a-8e4b-4f0a-b1c7-5a9e2d7f6b30")
_SEPARATORS: Final = re.compile(r"[,;\s]+")
_MONTHS_SEARCHED: Final = 24
_REFUSAL_CODES: Final = {
    numbers.RefusalCode.COUNTRY_NOT_ALLOWED: "country_not_allowed",
    numbers.RefusalCode.BLOCKED_CATEGORY: "blocked_number",
}

log = logging.getLogger(__name__)


class SendRefused(Exception):
    """A submission that cannot be taken; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_upload_bytes: int = 20 * 1024 * 1024
    render_timeout_s: float = 60.0
    max_pages: int = 100
    # How long a request waits for the broker's confirm before answering anyway (the
    # decision is recorded; the sweep publishes what is still owed).
    publish_wait_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Sending:
    """What sending needs besides the store: ``outbox`` None answers 503."""

    store: Store
    submissions: SubmissionStore
    cancellations: Cancellations
    outbox: Outbox | None
    limits: SendLimits


def _outbox(sending: Sending) -> Outbox:
    if sending.outbox is None:
        raise SendRefused(503, "unavailable", "sending is not available on this portal")
    return sending.outbox


def not_queued(what: str) -> SendRefused:
    return SendRefused(
        503,
        "unavailable",
        f"{what} could not be recorded (the database did not answer), so nothing was "
        "queued; try again (with the same Idempotency-Key, if you gave one).",
    )


async def record_decision(outbox: Outbox, decided: Decided, what: str) -> Recorded:
    """The decision recorded (or the one standing under its key); 503 if it is not."""
    try:
        return await outbox.record(decided)
    except Exception as exc:
        # The insert may have landed before the error reached us: then it stands.
        try:
            standing = await outbox.get(decided.key)
        except Exception:
            standing = None
        if standing is not None:
            return standing
        log.warning("%s not recorded: %s", what, exc)
        raise not_queued(what) from exc


def submission_message_id(submission_id: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"submitted:{submission_id}").hex


def cancel_message_id(fax_id: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"cancel:{fax_id}").hex


def split_numbers(values: list[str]) -> list[str]:
    """Numbers given as repeated fields, or commas/spaces/new lines in one."""
    return [n for value in values for n in _SEPARATORS.split(value.strip()) if n]


async def sending_faxbox(
    store: Store, principal: Principal, faxbox_id: str | None
) -> tuple[Faxbox, Account]:
    """The faxbox to send from: the one named (one the principal may use), else theirs."""
    if faxbox_id is None or not faxbox_id.strip():
        box = await faxbox_of(store, principal.user)
        if box is None:
            raise SendRefused(
                422, "no_faxbox", "You have no faxbox to send from; ask your administrator."
            )
    else:
        try:
            box = await store.get_faxbox(faxbox_id.strip())
        except NotFound:
            raise NotFound("faxbox", faxbox_id) from None
        await account_in_scope(store, principal, box.account_id)
        if not principal.is_admin and box.owner_user_id != principal.user.id:
            raise NotFound("faxbox", faxbox_id)
    return box, await store.get_account(box.account_id)


def checked_numbers(raw: list[str], account: Account, box: Faxbox) -> list[str]:
    """The distinct E.164 numbers, in the order given, under the account's rules (the
    validator applies the same rules again when it decides)."""
    given = split_numbers(raw)
    if not given:
        raise SendRefused(422, "no_number", "Name at least one fax number in `to`.")
    if len(given) > MAX_NUMBERS:
        raise SendRefused(
            422, "too_many_recipients", f"At most {MAX_NUMBERS} numbers in one request."
        )
    policy = account.number_policy()
    distinct: list[str] = []
    problems: list[str] = []
    codes: set[str] = set()
    for number in given:
        try:
            e164 = numbers.normalize(number, policy).e164
        except numbers.NumberRefused as refused:
            problems.append(f"{number}: {refused.message}")
            codes.add(_REFUSAL_CODES.get(refused.code, "invalid_number"))
            continue
        if e164 not in distinct:
            distinct.append(e164)
    if problems:
        # The email's codes (the validator's): one reason for all, else invalid_number.
        code = codes.pop() if len(codes) == 1 else "invalid_number"
        raise SendRefused(422, code, "These numbers cannot be faxed: " + " ".join(problems))
    if len(distinct) > box.max_recipients:
        raise SendRefused(
            422,
            "too_many_recipients",
            f"This faxbox sends one document to at most {box.max_recipients} numbers at once; "
            f"{len(distinct)} were given.",
        )
    return distinct


def document_kind(data: bytes, limits: SendLimits) -> str:
    if not data:
        raise SendRefused(422, "empty_document", "The document is empty (0 bytes).")
    if len(data) > limits.max_upload_bytes:
        mib = limits.max_upload_bytes / (1024 * 1024)
        raise SendRefused(
            413,
            "document_too_large",
            f"The document is {len(data) / (1024 * 1024):.1f} MB; at most {mib:g} MB can be faxed.",
        )
    kind = sniff_kind(data)
    if kind is None:
        raise SendRefused(415, "unsupported_document", "Only PDF and TIFF documents can be faxed.")
    return kind.value


def fingerprint(faxbox_id: str, destinations: list[str], document_sha256: str) -> str:
    said = "\n".join([faxbox_id, ",".join(destinations), document_sha256])
    return hashlib.sha256(said.encode()).hexdigest()


def fax_ids_for(submission_id: str, count: int) -> list[str]:
    """The validator's ids for a submission's numbers (see its ``recipient_fax_id``)."""
    return [submission_id if i == 0 else f"{submission_id}-{i + 1}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class Submitted:
    submission: Submission
    replayed: bool  # an earlier request with the same idempotency key made it


async def submit(
    sending: Sending,
    principal: Principal,
    *,
    faxbox_id: str | None,
    to: list[str],
    document: bytes | DocumentRef,
    filename: str = "document",
    channel: str = "api",
    idempotency_key: str | None = None,
    resend_of: str | None = None,
    now: datetime | None = None,
    submission_id: str | None = None,
) -> Submitted:
    """Check, store, record and publish one submission; or, for a known idempotency key,
    the submission that key made."""
    outbox = _outbox(sending)
    store = sending.store
    box, account = await sending_faxbox(store, principal, faxbox_id)
    destinations = checked_numbers(to, account, box)
    now = now or datetime.now(UTC)
    if isinstance(document, DocumentRef):
        digest = document.sha256
        data: bytes | None = None
    else:
        kind = document_kind(document, sending.limits)
        digest = hashlib.sha256(document).hexdigest()
        data = document
    submission_id = submission_id or new_id("fax")
    key = (idempotency_key or "").strip() or None
    if key is not None:
        if len(key) > 255:
            raise SendRefused(
                422, "bad_idempotency_key", "An Idempotency-Key has at most 255 characters."
            )
        try:
            held = await sending.submissions.take_key(
                account.id, key, fingerprint(box.id, destinations, digest), submission_id, now
            )
        except KeyConflict:
            raise SendRefused(
                409,
                "idempotency_key_reused",
                "This Idempotency-Key was used in the last 24 hours for a different request.",
            ) from None
        except KeyBusy:
            raise SendRefused(
                409, "idempotency_key_in_use", "A request with this Idempotency-Key is in progress."
            ) from None
        if not held.ours:
            earlier = await sending.submissions.get(held.submission_id)
            assert earlier is not None
            # Recorded already, unless the earlier request died in between: then now.
            recorded = await record_decision(
                outbox, Decided(earlier.id, (earlier.submitted(),)), "The submission"
            )
            await outbox.publish_soon(recorded, sending.limits.publish_wait_s)
            return Submitted(earlier, replayed=True)
    month = month_of(now)
    try:
        if data is not None:
            ref = await store.documents.put(
                account.id,
                month,
                data,
                filename=safe_name(filename, kind),
                content_type=_CONTENT_TYPES[kind],
                metadata={"fax_id": submission_id, "role": "upload"},
            )
        else:
            assert isinstance(document, DocumentRef)
            ref = document
        message = FaxSubmitted(
            message_id=submission_message_id(submission_id),
            occurred_at=now,
            fax_id=submission_id,
            account_id=account.id,
            month=month,
            user_id=principal.user.id,
            faxbox_id=box.id,
            numbers=tuple(destinations),
            document=ref,
            channel="portal" if channel == "portal" else "api",
            resend_of=resend_of,
        )
        submission = Submission(
            _id=submission_id,
            account_id=account.id,
            user_id=principal.user.id,
            month=month,
            fax_ids=fax_ids_for(submission_id, len(destinations)),
            numbers=destinations,
            message=message.model_dump_json(),
            created_at=now,
        )
        await sending.submissions.record(submission)
        recorded = await record_decision(
            outbox, Decided(submission_id, (message,)), "The submission"
        )
    except Exception as exc:
        await _undo(sending, account.id, key, submission_id)
        if isinstance(exc, SendRefused):
            raise
        raise not_queued("The submission") from exc
    # Cancelled (the client went away): nothing is undone, since the decision may stand;
    # a retry with the same Idempotency-Key completes the submission either way.
    await outbox.publish_soon(recorded, sending.limits.publish_wait_s)
    return Submitted(submission, replayed=False)


async def _undo(sending: Sending, account_id: str, key: str | None, submission_id: str) -> None:
    """A submission whose decision was not recorded: nobody was given its id, so it goes,
    and the idempotency key is free for the retry. If the database does not let us, the
    key keeps pointing at it, and a retry with that key records its decision then."""
    try:
        await sending.submissions.discard(submission_id)
        if key is not None:
            await sending.submissions.release_key(account_id, key, submission_id)
    except Exception as exc:
        log.warning("undoing submission %s failed: %s", submission_id, exc)


def safe_name(filename: str, kind: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename.strip())[:100] or "document"
    return name if "." in name else f"{name}.{'tif' if kind == 'tiff' else 'pdf'}"


# --- looking faxes up by id ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    fax_id: str
    account_id: str
    record: HistoryRecord | None  # None: submitted, not decided yet
    submission: Submission | None

    def view(self) -> FaxView:
        if self.record is not None:
            return from_record(self.record)
        assert self.submission is not None
        submitted = self.submission.submitted()
        return FaxView(
            id=self.fax_id,
            account_id=self.account_id,
            faxbox_id=submitted.faxbox_id,
            user_id=submitted.user_id,
            direction="outbound",
            status=ApiStatus.queued,
            to=self.submission.number_of(self.fax_id),
            pages_sent=0,
            attempts=0,
            created_at=self.submission.created_at,
            updated_at=self.submission.created_at,
        )


async def locate(
    store: Store, submissions: SubmissionStore, principal: Principal, fax_id: str
) -> Located:
    """A fax the principal may see, by id alone; NotFound otherwise."""
    submission = await submissions.of_fax(fax_id)
    if submission is not None:
        await account_in_scope(store, principal, submission.account_id)
        try:
            record = await get_fax(
                store, principal, submission.account_id, submission.month, fax_id
            )
        except NotFound:
            if not principal.is_admin and submission.user_id != principal.user.id:
                raise
            record = None
        return Located(fax_id, submission.account_id, record, submission)
    for account in await visible_accounts(store, principal):
        months = sorted(await store.history.months(account.id), reverse=True)
        for month in months[:_MONTHS_SEARCHED]:
            try:
                record = await get_fax(store, principal, account.id, month, fax_id)
            except NotFound:
                continue
            return Located(fax_id, account.id, record, None)
    raise NotFound("fax", fax_id)


async def cancel(sending: Sending, principal: Principal, fax_id: str) -> FaxView:
    """Ask for the fax to be stopped; SendRefused(409) once it is over."""
    outbox = _outbox(sending)
    found = await locate(sending.store, sending.submissions, principal, fax_id)
    view = found.view()
    if view.direction != "outbound":
        raise SendRefused(409, "not_outbound", "Only faxes being sent can be cancelled.")
    if view.status in TERMINAL_STATUSES:
        raise SendRefused(
            409, "already_finished", f"The fax is {view.status.value.replace('_', ' ')} already."
        )
    month = (
        found.record.month if found.record else (found.submission.month if found.submission else "")
    )
    # The request first: a call on the line looks for it, whatever the broker does.
    try:
        await sending.cancellations.request(fax_id, principal.user.id)
    except Exception as exc:
        raise not_queued("The cancel") from exc
    requested = FaxCancelRequested(
        message_id=cancel_message_id(fax_id),
        fax_id=fax_id,
        account_id=found.account_id,
        month=month,
        user_id=principal.user.id,
    )
    recorded = await record_decision(
        outbox, Decided(cancel_key(fax_id), (requested,)), "The cancel"
    )
    await outbox.publish_soon(recorded, sending.limits.publish_wait_s)
    return view


def cancel_key(fax_id: str) -> str:
    return f"{fax_id}:cancel"


async def resend(
    sending: Sending, principal: Principal, fax_id: str, idempotency_key: str | None = None
) -> Submitted:
    """A new fax of the same document to the same number, from the same faxbox."""
    found = await locate(sending.store, sending.submissions, principal, fax_id)
    record = found.record
    if found.submission is not None and record is None:
        submitted = found.submission.submitted()
        number = found.submission.number_of(fax_id)
        document: DocumentRef | None = submitted.document
        faxbox_id: str | None = submitted.faxbox_id
    elif record is not None and record.direction == "outbound":
        number = record.remote_number
        document = record.documents.get("original")
        faxbox_id = record.faxbox_id
    else:
        raise SendRefused(409, "not_outbound", "Only faxes we sent can be sent again.")
    if document is None or number is None or document.account_id != found.account_id:
        raise SendRefused(
            409, "nothing_to_resend", "This fax has no stored document and number to send again."
        )
    return await submit(
        sending,
        principal,
        faxbox_id=faxbox_id,
        to=[number],
        document=document,
        channel="api",
        idempotency_key=idempotency_key,
        resend_of=fax_id,
    )
