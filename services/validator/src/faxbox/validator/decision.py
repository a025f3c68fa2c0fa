"""What becomes of one email: accepted (a fax job), rejected (with every reason), or ignored.

``evaluate`` is the whole decision, shared by the bus handler and ``faxbox check-email``:
it reads the mail (off the event loop, within ``Caps``), finds who this copy is for and
the account from their realm, the faxbox from the sender, checks numbers, attachment and
limits, and renders the document (rendering is part of deciding: a document that cannot
be rendered is refused, with the reason). It talks to the outside only through the
ports it is given.

Recipients (the rule is in ``faxbox.shared.envelope``): a copy that names a realm
envelope recipient is for that one number; a copy that names none is for every distinct
fax address in To and Cc (two spellings of one number are one fax). Either way every
fax address the mail shows (To, Cc, and this copy's envelope recipient) is checked, all
or nothing: one bad address and nothing is faxed, the rejection lists each bad one.
Copies of one mail therefore agree: they see the same To and Cc.

Outcomes:

- **ignored**, nothing goes back to anyone: automatic mail (auto-replies, bounces,
  mailing lists; acked quietly, so two systems can never mail each other in a loop),
  mail to no account's realm and mail from an unknown sender (``dead_letter``: the
  handler dead-letters these with the reason so admins see them; replying would be
  backscatter to a probably forged address);
- **rejected**: a known sender, and at least one reason, each with what to fix;
- **accepted**: one fax TIFF, the pages it has, and one fax per number (E.164), each
  with its own fax id: the mail's own for the first, ``<fax id>-<n>`` for the n-th.
  With ``claims`` each number is claimed for this mail first (``<mailbox>|<identity>|
  <number>``): a number another copy of the same mail took is not faxed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Final

from faxbox.render import RefusalCode as RenderCode
from faxbox.render import RenderRefused
from faxbox.shared.contracts import OversizeMail, RejectionCode, RejectionReason
from faxbox.shared.envelope import domain_of, envelope_recipient
from faxbox.shared.numbers import (
    NormalizedNumber,
    NumberRefused,
    RefusalCode,
    fax_address,
    normalize,
)
from faxbox.shared.store import Account, Faxbox, SenderAuth, User
from faxbox.validator.authz import SenderMatch, SenderProof, match_sender, prove_sender
from faxbox.validator.merge import concatenate
from faxbox.validator.mime import Caps, Mail, Part, PartRole, describe, parse_mail
from faxbox.validator.ports import Claims, Directory, NumberInventory, PageCounters, Renderer

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTACHMENT_BYTES: Final = 20 * 1024 * 1024
DEFAULT_MAX_PAGES: Final = 100
# Pages a UTC day when neither the user nor the account sets its own cap (0: no cap).
DEFAULT_DAILY_PAGES_PER_USER: Final = 200
DEFAULT_DAILY_PAGES_PER_ACCOUNT: Final = 1000
_EXAMPLE_NUMBER: Final = "+12125551234"
_Y_DPI: Final = {"fine": 196, "standard": 98}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Ignored:
    # automatic_mail, multiple_senders, no_fax_recipient, unknown_sender, already_faxed
    code: str
    message: str
    dead_letter: bool


@dataclass(frozen=True, slots=True)
class Limits:
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    max_pages: int = DEFAULT_MAX_PAGES
    trusted_authserv_ids: frozenset[str] = frozenset()
    caps: Caps = field(default_factory=Caps)
    daily_pages_per_user: int = DEFAULT_DAILY_PAGES_PER_USER
    daily_pages_per_account: int = DEFAULT_DAILY_PAGES_PER_ACCOUNT
    # faxbox: a caller id is presented only while the faxbox holds it; account: while
    # its account does (FAXBOX_CALLER_ID_SCOPE).
    caller_id_scope: str = "faxbox"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One number this copy is faxed to."""

    address: str  # the fax address as written
    number: NormalizedNumber
    fax_id: str | None = None  # assigned when a real decision (not a dry run) claims it


def recipient_fax_id(mail_fax_id: str, index: int) -> str:
    """The first number keeps the mail's fax id; the others derive from it, so a
    redelivery of the same mail gives every fax the same id again."""
    return mail_fax_id if index == 0 else f"{mail_fax_id}-{index + 1}"


def recipient_claim_key(mailbox: str, identity: str, number: str) -> str:
    return f"{mailbox}|{identity}|{number}"


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
    recipients: tuple[Recipient, ...] = ()
    documents: tuple[Part, ...] = ()
    pages: int | None = None
    fax_tiff: bytes | None = field(default=None, repr=False)
    caller_id: str | None = None  # the number presented; one the faxbox owns

    @property
    def number(self) -> NormalizedNumber | None:
        return self.recipients[0].number if self.recipients else None

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(r.number.e164 for r in self.recipients)

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
            "numbers": list(self.numbers),
            "pages": self.pages,
            "attachment": self.attachment,
            "reasons": reasons,
        }


def _reason(code: RejectionCode, message: str) -> RejectionReason:
    return RejectionReason(code=code, message=message)


def switched_off(faxbox: Faxbox, *, again: str) -> list[RejectionReason]:
    """Why a switched-off faxbox sends nothing (none if it is on); ``again``: how the
    sender sends once more, in words of the way they sent."""
    if faxbox.enabled:
        return []
    return [
        _reason(
            RejectionCode.faxbox_disabled,
            "The faxbox is switched off, so it cannot send faxes. Ask your administrator "
            f"to enable it, then {again}.",
        )
    ]


# --- the destination ------------------------------------------------------------------------


class _Realms:
    """Accounts by realm, each domain looked up once per mail."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._seen: dict[str, Account | None] = {}

    async def of(self, domain: str) -> Account | None:
        if domain not in self._seen:
            self._seen[domain] = await self._directory.account_by_realm(domain)
        return self._seen[domain]

    async def account(self, address: str) -> Account | None:
        return await self.of(domain_of(address))

    async def is_realm(self, domain: str) -> bool:
        return await self.of(domain) is not None


@dataclass(frozen=True, slots=True)
class _Addressed:
    account: Account
    targets: tuple[str, ...]  # the fax addresses this copy is for
    shown: tuple[str, ...]  # every fax address the mail shows, targets first
    elsewhere: tuple[str, ...]  # fax addresses in another account's realm


async def _addressed(mail: Mail, realms: _Realms) -> _Addressed | None:
    """Who this copy is for (see the module's docstring), or None for no realm at all."""
    envelope = await envelope_recipient(mail.envelope, realms.is_realm)
    visible = [a for a in mail.visible if await realms.account(a) is not None]
    first = envelope or (visible[0] if visible else None)
    if first is None:
        return None
    account = await realms.account(first)
    assert account is not None
    ours = [a for a in visible if domain_of(a) == account.realm]
    targets = (envelope,) if envelope else tuple(ours)
    shown = tuple(dict.fromkeys([*targets, *ours]))
    return _Addressed(account, targets, shown, tuple(a for a in visible if a not in ours))


def _number_reason(
    local: str, account: Account, refused: NumberRefused
) -> tuple[RejectionReason, None]:
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
    code = number_refusal_code(refused)
    shown = local if len(local) <= 64 else local[:61] + "..."
    text = f"The fax address {shown}@{account.realm} does not name a number we can fax: "
    return _reason(code, f"{text}{refused.message} {hint}"), None


def number_refusal_code(refused: NumberRefused) -> RejectionCode:
    if refused.code is RefusalCode.COUNTRY_NOT_ALLOWED:
        return RejectionCode.country_not_allowed
    if refused.code is RefusalCode.BLOCKED_CATEGORY:
        return RejectionCode.blocked_number
    return RejectionCode.invalid_number


def _check_number(
    local: str, account: Account
) -> tuple[RejectionReason | None, NormalizedNumber | None]:
    try:
        return None, normalize(local, account.number_policy())
    except NumberRefused as refused:
        return _number_reason(local, account, refused)


def _check_recipients(
    addressed: _Addressed, faxbox: Faxbox
) -> tuple[list[RejectionReason], tuple[Recipient, ...]]:
    """Every fax address shown, checked; the numbers this copy is for, one per number."""
    account = addressed.account
    reasons: list[RejectionReason] = []
    recipients: list[Recipient] = []
    distinct: set[str] = set()  # numbers, and bad addresses as written
    for address in addressed.shown:  # this copy's own first: their spelling wins
        reason, number = _check_number(address.rpartition("@")[0], account)
        key = number.e164 if number is not None else address.lower()
        if key in distinct:
            continue
        distinct.add(key)
        if reason is not None:
            reasons.append(reason)
        elif number is not None and address in addressed.targets:
            recipients.append(Recipient(address, number))
    for address in addressed.elsewhere:
        distinct.add(address.lower())
        reasons.append(
            _reason(
                RejectionCode.invalid_number,
                f"The fax address {address} belongs to another organisation's fax domain, "
                f"not to {account.realm}. Send the faxes for it in an email of its own.",
            )
        )
    if len(distinct) > faxbox.max_recipients:
        reasons.insert(
            0,
            _reason(
                RejectionCode.too_many_recipients,
                f"This email is addressed to {len(distinct)} fax numbers, but one email can "
                f"be faxed to at most {faxbox.max_recipients}. Send it to fewer numbers at "
                "once (several emails are fine).",
            ),
        )
    return reasons, tuple(recipients)


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
    RenderCode.TOO_COMPLEX: RejectionCode.too_complex,
    RenderCode.RENDERING_TIMEOUT: RejectionCode.rendering_timeout,
}


def _render_reason(doc: Part, refused: RenderRefused, several: bool) -> RejectionReason:
    code = _RENDER_CODES.get(refused.code, RejectionCode.rendering_failed)
    prefix = f"{doc.filename or 'An attachment'}: " if several else ""
    return _reason(code, f"{prefix}{refused.message}")


async def render_all(
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


def _limit_reason(
    who: str, limit: int, used: int, pages: int, faxes: int, day: date
) -> RejectionReason:
    this = (
        f"This fax has {pages} pages"
        if faxes == 1
        else f"These {faxes} faxes have {pages} pages each ({pages * faxes} pages)"
    )
    resets = day + timedelta(days=1)
    return _reason(
        RejectionCode.daily_page_limit,
        f"{this}, but {who} may send at most {limit} pages a day and {used} have been sent "
        f"today, so it would go over the limit. The count starts again at 00:00 UTC on "
        f"{resets:%d %B %Y}: send it then, or ask your administrator to raise the limit.",
    )


def _cap(own: int | None, default: int) -> int | None:
    """The pages allowed a day: the user's or account's own cap, else the platform's;
    0 (either way) is no cap at all."""
    value = default if own is None else own
    return None if value == 0 else value


async def check_limits(
    counters: PageCounters,
    owner: User,
    account: Account,
    pages: int,
    faxes: int,
    day: date,
    reserve_for: str | None,
    limits: Limits,
) -> list[RejectionReason]:
    """Every fax of the mail counts its pages; ``reserve_for`` (the mail's fax id)
    reserves them all at once, or none."""
    total = pages * faxes
    scopes = [
        (
            "your faxbox",
            _cap(owner.daily_page_limit, limits.daily_pages_per_user),
            counter_key("user", owner.id, day),
        ),
        (
            "your organisation",
            _cap(account.daily_page_limit, limits.daily_pages_per_account),
            counter_key("account", account.id, day),
        ),
    ]
    reasons: list[RejectionReason] = []
    if reserve_for is None:
        for who, limit, key in scopes:
            if limit is not None:
                used = await counters.used(key)
                if used + total > limit:
                    reasons.append(_limit_reason(who, limit, used, pages, faxes, day))
        return reasons
    reserved: list[str] = []
    for who, limit, key in scopes:
        if limit is None:
            continue
        if await counters.reserve(key, reserve_for, total, limit):
            reserved.append(key)
            continue
        for key_done in reserved:  # all or nothing: give back what this mail took
            await counters.release(key_done, reserve_for, total)
        used = await counters.used(key)
        return [_limit_reason(who, limit, used, pages, faxes, day)]
    return reasons


# --- who sent it, and what it presents ---------------------------------------------------------


def _unproven_reason(sender: str, proof: SenderProof, limits: Limits) -> RejectionReason:
    """What was checked and how to fix it, for the faxbox's owner."""
    if not limits.trusted_authserv_ids:
        checked = (
            "This platform has no trusted mail server configured, so no sender can be "
            "proven and every fax to a faxbox that requires a proven sender is refused. "
            "The platform's administrator sets the trusted servers "
            "(FAXBOX_VALIDATOR_AUTHSERV_IDS); until then an administrator can switch the "
            "sender check of this faxbox off."
        )
        return _reason(RejectionCode.sender_not_authenticated, checked)
    servers = " or ".join(sorted(limits.trusted_authserv_ids))
    if proof.header is None:
        said = f"no Authentication-Results from our mail server ({servers}) at all"
    else:
        said = f"our mail server ({proof.header.authserv_id}) found {proof.found()}"
    return _reason(
        RejectionCode.sender_not_authenticated,
        f"This faxbox faxes only email that our mail server proved came from its sender, "
        f"and this email, from {sender}, was not proven: {said}. Proof is a DMARC pass for "
        f"{_domain_of(sender)}, a DKIM signature or SPF pass of that domain, or a login to "
        "our mail server as that address. It may have been forged. If you sent it, send it "
        "again from your own mail account, directly (not through a forwarding service); if "
        "that keeps failing, ask your administrator.",
    )


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


async def accepted(
    decided: Decision, tiff: bytes, faxbox: Faxbox, directory: NumberInventory, limits: Limits
) -> Decision:
    """``decided`` accepted: the fax TIFF to send and the caller id the calls present."""
    caller_id = await presented_caller_id(faxbox, directory, limits)
    return dataclasses.replace(
        decided, outcome=Outcome.ACCEPTED, fax_tiff=tiff, caller_id=caller_id
    )


async def presented_caller_id(
    faxbox: Faxbox, directory: NumberInventory, limits: Limits
) -> str | None:
    """The faxbox's caller id while it owns it; else its first number, else none.

    The CLI and the portal only set owned numbers and unassigning clears them; this
    keeps a caller id stored before those rules (or left by a race) off the line.
    """
    wanted = faxbox.caller_id
    if wanted is None or wanted in faxbox.numbers:
        return wanted
    if limits.caller_id_scope == "account" and await directory.holds_number(
        faxbox.account_id, wanted
    ):
        return wanted
    fallback = next((n for n in faxbox.numbers if n.startswith("+")), None)
    log.warning(
        "caller id %s is not the faxbox's own number; presenting %s instead", wanted, fallback
    )
    return fallback


# --- the whole decision --------------------------------------------------------------------------


def _ignored(mail: Mail | None, code: str, message: str, dead_letter: bool) -> Decision:
    return Decision(Outcome.IGNORED, mail, Ignored(code, message, dead_letter))


def _oversize_reason(oversize: OversizeMail) -> RejectionReason:
    mib = 1024 * 1024
    return _reason(
        RejectionCode.mail_too_large,
        f"Your email was {oversize.size / mib:.1f} MB; at most {oversize.limit / mib:g} MB "
        "can be taken in, so it was not read. Send the document on its own, smaller (for "
        "example printed to PDF again, or scanned in black and white), or split it into "
        "several emails.",
    )


async def _claimed(
    recipients: tuple[Recipient, ...],
    claims: Claims,
    mailbox: str,
    mail: Mail,
    mail_fax_id: str,
) -> tuple[Recipient, ...]:
    """The recipients this delivery holds, each with its fax id; numbers another copy of
    the same mail claimed first are left out."""
    kept: list[Recipient] = []
    for index, recipient in enumerate(recipients):
        fax_id = recipient_fax_id(mail_fax_id, index)
        key = recipient_claim_key(mailbox, mail.identity, recipient.number.e164)
        if await claims.claim(key, fax_id):
            kept.append(Recipient(recipient.address, recipient.number, fax_id))
        else:
            log.info(
                "%s was faxed from another copy of this mail; not again", recipient.number.e164
            )
    return tuple(kept)


async def evaluate(
    raw: bytes,
    *,
    directory: Directory,
    counters: PageCounters,
    renderer: Renderer,
    limits: Limits,
    day: date,
    reserve_for: str | None = None,
    claims: Claims | None = None,
    mailbox: str = "",
    oversize: OversizeMail | None = None,
    parse: Callable[[bytes, Caps], Mail] = parse_mail,
) -> Decision:
    """Decide about one raw email (one delivered copy).

    ``reserve_for`` (the mail's fax id) makes it a real decision: with ``claims`` each
    number is claimed for this mail, and the pages of every fax are reserved against
    the daily limits when it is accepted. Without it nothing is written (the dry run).
    ``oversize``: the mail was over the intake's size cap and ``raw`` is its header
    block. Raises ``UndecodableMail`` (a ``PermanentError``) if ``raw`` is not an email.
    """
    mail = await asyncio.to_thread(parse, raw, limits.caps)
    if mail.automatic is not None:
        return _ignored(
            mail, "automatic_mail", f"automatic mail is never faxed ({mail.automatic})", False
        )
    if len(mail.senders) > 1:
        return _ignored(
            mail,
            "multiple_senders",
            f"mail from {', '.join(mail.senders)}: several From addresses, so nobody can be "
            "told who it was from; nothing was faxed or sent back",
            True,
        )

    realms = _Realms(directory)
    addressed = await _addressed(mail, realms)
    if addressed is None:
        to = ", ".join((*mail.envelope, *mail.visible)) or "no recipient"
        return _ignored(
            mail,
            "no_fax_recipient",
            f"mail from {mail.sender or 'an unknown address'} to {to}: no recipient is in the "
            "realm of any account",
            True,
        )
    account = addressed.account
    destination = ", ".join(addressed.shown)

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
    rejected = Decision(
        Outcome.REJECTED, mail, account=account, faxbox=faxbox, owner=owner,
        destination_raw=destination,
    )  # fmt: skip
    # Past a cap nothing more is read: that one reason is the answer.
    if oversize is not None:
        return dataclasses.replace(rejected, reasons=(_oversize_reason(oversize),))
    if mail.cap is not None:
        return dataclasses.replace(rejected, reasons=(_reason(mail.cap.code, mail.cap.message),))

    if faxbox.sender_auth is SenderAuth.REQUIRED:
        proof = prove_sender(mail.sender, mail.authentication_results, limits.trusted_authserv_ids)
        if not proof.proven:
            # Possibly forged: nothing more of it is read (no rendering, no counting), and
            # the notice goes to the owner's own address, never to one from the mail.
            reason = _unproven_reason(mail.sender or "", proof, limits)
            return dataclasses.replace(rejected, reasons=(reason,))

    reasons = switched_off(faxbox, again="send the email again")

    recipient_reasons, recipients = _check_recipients(addressed, faxbox)
    reasons.extend(recipient_reasons)

    documents = mail.documents()
    document_reasons = _document_reasons(documents, mail, faxbox, limits)
    reasons.extend(document_reasons)

    tiff: bytes | None = None
    pages: int | None = None
    if documents and not document_reasons:
        render_reasons, tiff, pages = await render_all(documents, faxbox, renderer, limits)
        reasons.extend(render_reasons)

    decided = dataclasses.replace(rejected, recipients=recipients, documents=documents, pages=pages)
    if pages is None or tiff is None:
        return dataclasses.replace(decided, reasons=tuple(reasons))
    if reasons or reserve_for is None:  # read the limits only, to list every reason
        faxes = max(1, len(recipients))  # a bad number would still have been one fax
        reasons.extend(
            await check_limits(counters, owner, account, pages, faxes, day, None, limits)
        )
        if reasons:
            return dataclasses.replace(decided, reasons=tuple(reasons))
        return await accepted(decided, tiff, faxbox, directory, limits)

    if claims is not None:
        recipients = await _claimed(recipients, claims, mailbox, mail, reserve_for)
        if not recipients:
            return _ignored(
                mail,
                "already_faxed",
                f"every number of this mail ({', '.join(decided.numbers)}) was faxed from "
                "another copy of it",
                False,
            )
    else:
        recipients = tuple(
            Recipient(r.address, r.number, recipient_fax_id(reserve_for, i))
            for i, r in enumerate(recipients)
        )
    reasons.extend(
        await check_limits(
            counters, owner, account, pages, len(recipients), day, reserve_for, limits
        )
    )
    if reasons:
        if claims is not None:  # another copy may fax these numbers after all
            for recipient in recipients:
                assert recipient.fax_id is not None
                key = recipient_claim_key(mailbox, mail.identity, recipient.number.e164)
                await claims.release(key, recipient.fax_id)
        return dataclasses.replace(decided, reasons=tuple(reasons))
    decided = dataclasses.replace(decided, recipients=recipients)
    return await accepted(decided, tiff, faxbox, directory, limits)
