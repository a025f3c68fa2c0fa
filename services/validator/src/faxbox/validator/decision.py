"""What becomes of one email: accepted (a fax job), rejected (with every reason), or ignored.

``evaluate`` is the whole decision, shared by the bus handler and ``faxbox check-email``:
it reads the mail, finds the account from the recipient's realm and the faxbox from the
sender, checks number, attachment and limits, and renders the document (rendering is
part of deciding: a document that cannot be rendered is refused, with the reason).
It talks to the outside only through the ports it is given.

Outcomes:

- **ignored**, nothing goes back to anyone: automatic mail (auto-replies, bounces,
  mailing lists; acked quietly, so two systems can never mail each other in a loop),
  mail to no account's realm and mail from an unknown sender (``dead_letter``: the
  handler dead-letters these with the reason so admins see them; replying would be
  backscatter to a probably forged address);
- **rejected**: a known sender, and at least one reason, each with what to fix;
- **accepted**: one fax TIFF, the pages it has, the number in E.164.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Final

from faxbox.render import RefusalCode as RenderCode
from faxbox.render import RenderRefused
from faxbox.shared.contracts import RejectionCode, RejectionReason
from faxbox.shared.numbers import (
    NormalizedNumber,
    NumberRefused,
    RefusalCode,
    fax_address,
    normalize,
)
from faxbox.shared.store import Account, Faxbox, User
from faxbox.validator.authz import SenderMatch, match_sender, sender_authenticated
from faxbox.validator.merge import concatenate
from faxbox.validator.mime import Mail, Part, PartRole, describe, parse_mail
from faxbox.validator.ports import Directory, PageCounters, Renderer

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTACHMENT_BYTES: Final = 20 * 1024 * 1024
DEFAULT_MAX_PAGES: Final = 100
_EXAMPLE_NUMBER: Final = "+12125551234"
_Y_DPI: Final = {"fine": 196, "standard": 98}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Ignored:
    code: str  # automatic_mail, no_fax_recipient, unknown_sender
    message: str
    dead_letter: bool


@dataclass(frozen=True, slots=True)
class Limits:
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    max_pages: int = DEFAULT_MAX_PAGES
    trusted_authserv_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    mail: Mail | None
    ignored: Ignored | None = None
    reasons: tuple[RejectionReason, ...] = ()
    account: Account | None = None
    faxbox: Faxbox | None = None
    owner: User | None = None
    destination_raw: str | None = None
    number: NormalizedNumber | None = None
    documents: tuple[Part, ...] = ()
    pages: int | None = None
    fax_tiff: bytes | None = field(default=None, repr=False)

    @property
    def attachment(self) -> str | None:
        names = [d.filename or "(no name)" for d in self.documents]
        return ", ".join(names) if names else None

    def summary(self) -> dict[str, object]:
        """The JSON object ``faxbox check-email`` prints."""
        if self.ignored is not None:
            reasons = [{"code": self.ignored.code, "message": self.ignored.message}]
        else:
            reasons = [{"code": r.code.value, "message": r.message} for r in self.reasons]
        return {
            "decision": self.outcome.value,
            "number": self.number.e164 if self.number else None,
            "pages": self.pages,
            "attachment": self.attachment,
            "reasons": reasons,
        }


def _reason(code: RejectionCode, message: str) -> RejectionReason:
    return RejectionReason(code=code, message=message)


# --- the destination ------------------------------------------------------------------------


async def _destination(mail: Mail, directory: Directory) -> tuple[Account, str] | None:
    seen: dict[str, Account | None] = {}
    for address in mail.recipients:
        domain = address.rpartition("@")[2].strip().lower()
        if domain not in seen:
            seen[domain] = await directory.account_by_realm(domain)
        account = seen[domain]
        if account is not None:
            return account, address
    return None


def _number_reason(
    local: str, account: Account, refused: NumberRefused
) -> tuple[RejectionReason, None]:
    blocked = refused.code in (RefusalCode.BLOCKED_CATEGORY, RefusalCode.COUNTRY_NOT_ALLOWED)
    example = fax_address(_EXAMPLE_NUMBER, account.realm)
    hint = f"A valid fax address looks like {example}."
    if refused.code is RefusalCode.INVALID_CHARACTERS:
        # The sender may well have meant the digits: offer the address that would work.
        digits = "".join(ch for ch in local if ch.isdigit() or ch == "+")
        if digits.startswith("+") or "+" not in digits:
            try:
                suggestion = normalize(digits, account.number_policy())
            except NumberRefused:
                pass
            else:
                hint = f"Did you mean {fax_address(suggestion.e164, account.realm)}?"
    code = RejectionCode.blocked_number if blocked else RejectionCode.invalid_number
    shown = local if len(local) <= 64 else local[:61] + "..."
    text = f"The fax address {shown}@{account.realm} does not name a number we can fax: "
    return _reason(code, f"{text}{refused.message} {hint}"), None


def _check_number(
    local: str, account: Account
) -> tuple[RejectionReason | None, NormalizedNumber | None]:
    try:
        return None, normalize(local, account.number_policy())
    except NumberRefused as refused:
        return _number_reason(local, account, refused)


# --- attachments -----------------------------------------------------------------------------


def _found_text(mail: Mail) -> str:
    others = mail.others()
    forwards = [p for p in mail.parts if p.role is PartRole.FORWARDED]
    if not others and not forwards:
        return "The email had no attachments at all."
    files = [p.label for p in others if p.role is PartRole.OTHER]
    pictures = [p.label for p in others if p.role is PartRole.INLINE_IMAGE]
    said: list[str] = []
    if forwards:
        said.append("A forwarded email was attached, with no PDF or TIFF inside it.")
    if any(p.content_type == "application/ms-tnef" for p in others):
        said.append(
            "Outlook packed the attachments into winmail.dat, which only Outlook can "
            "open: send the email as HTML or plain text instead of Rich Text."
        )
    if files:
        said.append(f"Attached, but not PDF or TIFF: {', '.join(files)}.")
    if pictures:
        said.append(
            f"Pictures inside the message text (such as signature logos), which are not "
            f"faxed: {', '.join(pictures)}."
        )
    return " ".join(said)


def _document_reasons(
    documents: tuple[Part, ...], mail: Mail, faxbox: Faxbox, limits: Limits
) -> list[RejectionReason]:
    reasons: list[RejectionReason] = []
    if not documents:
        reasons.append(
            _reason(
                RejectionCode.no_attachment,
                "No PDF or TIFF document was attached, so there was nothing to fax. "
                f"{_found_text(mail)} Attach exactly one PDF or TIFF file and send again.",
            )
        )
        return reasons
    if len(documents) > 1 and not faxbox.merge_attachments:
        reasons.append(
            _reason(
                RejectionCode.too_many_attachments,
                f"{len(documents)} documents were attached ({describe(documents)}), but one "
                "fax carries exactly one document. Send each document in its own email, or "
                "combine them into one PDF first.",
            )
        )
    for doc in documents:
        name = doc.filename or "the attachment"
        if doc.size == 0:
            reasons.append(
                _reason(
                    RejectionCode.empty_attachment,
                    f"The attachment {name} is empty (0 bytes); it was probably not saved "
                    "completely. Attach the document again and resend.",
                )
            )
        elif doc.size > limits.max_attachment_bytes:
            mib = limits.max_attachment_bytes / (1024 * 1024)
            reasons.append(
                _reason(
                    RejectionCode.attachment_too_large,
                    f"The attachment {name} is {doc.size / (1024 * 1024):.1f} MB; at most "
                    f"{mib:g} MB can be faxed. Reduce it (for example print it to PDF again, "
                    "or scan in black and white) or split it into parts.",
                )
            )
    return reasons


_RENDER_CODES: Final = {
    RenderCode.ENCRYPTED_PDF: RejectionCode.encrypted_pdf,
    RenderCode.UNREADABLE_DOCUMENT: RejectionCode.unreadable_document,
    RenderCode.UNSUPPORTED_DOCUMENT: RejectionCode.unreadable_document,
    RenderCode.UNSUPPORTED_TIFF: RejectionCode.unsupported_document,
    RenderCode.EMPTY_DOCUMENT: RejectionCode.empty_attachment,
    RenderCode.TOO_MANY_PAGES: RejectionCode.too_many_pages,
    RenderCode.PAGE_TOO_LARGE: RejectionCode.page_too_large,
    RenderCode.RENDERING_TIMEOUT: RejectionCode.rendering_timeout,
}


def _render_reason(doc: Part, refused: RenderRefused, several: bool) -> RejectionReason:
    code = _RENDER_CODES.get(refused.code, RejectionCode.rendering_failed)
    prefix = f"{doc.filename or 'An attachment'}: " if several else ""
    return _reason(code, f"{prefix}{refused.message}")


async def _render_all(
    documents: tuple[Part, ...], faxbox: Faxbox, renderer: Renderer, limits: Limits
) -> tuple[list[RejectionReason], bytes | None, int | None]:
    reasons: list[RejectionReason] = []
    tiffs: list[bytes] = []
    pages = 0
    for doc in documents:
        assert doc.kind is not None
        try:
            rendered = await renderer.render(
                doc.data, doc.kind.value, faxbox.resolution, limits.max_pages
            )
        except RenderRefused as refused:
            reasons.append(_render_reason(doc, refused, len(documents) > 1))
            continue
        tiffs.append(rendered.tiff)
        pages += rendered.page_count
    if reasons:
        return reasons, None, pages or None
    if pages > limits.max_pages:
        reasons.append(
            _reason(
                RejectionCode.too_many_pages,
                f"The documents have {pages} pages together; at most {limits.max_pages} "
                "pages can be sent in one fax. Please split them over several emails.",
            )
        )
        return reasons, None, pages
    if len(tiffs) == 1:
        return reasons, tiffs[0], pages
    merged = await asyncio.to_thread(concatenate, tiffs, _Y_DPI[faxbox.resolution])
    return reasons, merged, pages


# --- daily page limits -------------------------------------------------------------------------


def counter_key(scope: str, ident: str, day: date) -> str:
    return f"{scope}:{ident}:{day.strftime('%Y%m%d')}"


def _limit_reason(who: str, limit: int, used: int, pages: int) -> RejectionReason:
    return _reason(
        RejectionCode.daily_page_limit,
        f"This fax has {pages} pages, but {who} may send at most {limit} pages a day and "
        f"{used} have been sent today, so it would go over the limit. The count starts "
        "again at midnight (UTC): send it then, or ask your administrator to raise the limit.",
    )


async def _check_limits(
    counters: PageCounters,
    owner: User,
    account: Account,
    pages: int,
    day: date,
    reserve_for: str | None,
) -> list[RejectionReason]:
    scopes = [
        ("your faxbox", owner.daily_page_limit, counter_key("user", owner.id, day)),
        ("your organisation", account.daily_page_limit, counter_key("account", account.id, day)),
    ]
    reasons: list[RejectionReason] = []
    if reserve_for is None:
        for who, limit, key in scopes:
            if limit is not None:
                used = await counters.used(key)
                if used + pages > limit:
                    reasons.append(_limit_reason(who, limit, used, pages))
        return reasons
    reserved: list[str] = []
    for who, limit, key in scopes:
        if limit is None:
            continue
        if await counters.reserve(key, reserve_for, pages, limit):
            reserved.append(key)
            continue
        for key_done in reserved:  # all or nothing: give back what this fax took
            await counters.release(key_done, reserve_for, pages)
        used = await counters.used(key)
        return [_limit_reason(who, limit, used, pages)]
    return reasons


# --- the whole decision --------------------------------------------------------------------------


def _ignored(mail: Mail | None, code: str, message: str, dead_letter: bool) -> Decision:
    return Decision(Outcome.IGNORED, mail, Ignored(code, message, dead_letter))


async def evaluate(
    raw: bytes,
    *,
    directory: Directory,
    counters: PageCounters,
    renderer: Renderer,
    limits: Limits,
    day: date,
    reserve_for: str | None = None,
    parse: Callable[[bytes], Mail] = parse_mail,
) -> Decision:
    """Decide about one raw email.

    ``reserve_for`` (the fax id) reserves the pages against the daily limits when the
    fax is accepted; without it the limits are only read (the dry run). Raises
    ``UndecodableMail`` (a ``PermanentError``) if ``raw`` is not an email at all.
    """
    mail = parse(raw)
    if mail.automatic is not None:
        return _ignored(
            mail, "automatic_mail", f"automatic mail is never faxed ({mail.automatic})", False
        )

    found = await _destination(mail, directory)
    if found is None:
        to = ", ".join(mail.recipients) or "no recipient"
        return _ignored(
            mail,
            "no_fax_recipient",
            f"mail from {mail.sender or 'an unknown address'} to {to}: no recipient is in the "
            "realm of any account",
            True,
        )
    account, destination = found

    match: SenderMatch | None = None
    if mail.sender is not None:
        candidates = await directory.sender_candidates(account.id, mail.sender)
        match = match_sender(mail.sender, candidates)
    if match is None:
        return _ignored(
            mail,
            "unknown_sender",
            f"mail from {mail.sender or repr(mail.from_header)} to {destination}: the sender "
            f"is not the owner, the alternate address or on the permission list of any "
            f"faxbox of account {account.id} ({account.realm}); nothing was sent back",
            True,
        )

    faxbox, owner = match.faxbox, match.owner
    reasons: list[RejectionReason] = []
    if not faxbox.enabled:
        reasons.append(
            _reason(
                RejectionCode.faxbox_disabled,
                "Your faxbox is switched off, so it cannot send faxes. Ask your "
                "administrator to enable it, then send the email again.",
            )
        )
    if faxbox.require_authenticated_sender and not sender_authenticated(
        mail.sender_domain, mail.authentication_results, limits.trusted_authserv_ids
    ):
        reasons.append(
            _reason(
                RejectionCode.unauthenticated_sender,
                f"This faxbox only accepts email whose sender address is proven genuine "
                f"(DMARC, or SPF or DKIM for the domain {mail.sender_domain}), and this "
                "email carried no such proof, so it may have been forged. Send from your "
                "own mail account directly (not through a forwarding service), or ask "
                "your mail administrator to set up SPF and DKIM for your domain.",
            )
        )

    local = destination.rpartition("@")[0]
    number_reason, number = _check_number(local, account)
    if number_reason is not None:
        reasons.append(number_reason)

    documents = mail.documents()
    document_reasons = _document_reasons(documents, mail, faxbox, limits)
    reasons.extend(document_reasons)

    tiff: bytes | None = None
    pages: int | None = None
    if documents and not document_reasons:
        render_reasons, tiff, pages = await _render_all(documents, faxbox, renderer, limits)
        reasons.extend(render_reasons)

    if pages is not None and tiff is not None:
        reasons.extend(
            await _check_limits(
                counters, owner, account, pages, day, None if reasons else reserve_for
            )
        )

    outcome = Outcome.REJECTED if reasons else Outcome.ACCEPTED
    return Decision(
        outcome=outcome,
        mail=mail,
        reasons=tuple(reasons),
        account=account,
        faxbox=faxbox,
        owner=owner,
        destination_raw=destination,
        number=number,
        documents=documents,
        pages=pages,
        fax_tiff=tiff if outcome is Outcome.ACCEPTED else None,
    )
