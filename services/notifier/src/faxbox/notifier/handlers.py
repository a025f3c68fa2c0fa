"""Handlers: one per outcome event, each sending at most one mail per fax and kind.

Each returns what it decided: the ``NotificationSent`` of the mail it sent, under the
key ``<fax_id>:<kind>``, which the runtime records and publishes (the record is what
says "sent"); or that same recorded decision again when the mail went out before (it is
announced again, with the same message id); or None when there is nothing to send.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from PIL import UnidentifiedImageError

from faxbox.notifier.compose import (
    Mail,
    failed_mail,
    inbound_failed_mail,
    new_message_id,
    received_mail,
    rejected_mail,
    sent_mail,
    thumbnail_png,
    to_message,
)
from faxbox.notifier.ports import (
    ClaimBusy,
    Directory,
    MailDeferred,
    Mailer,
    MailRefused,
    SendClaims,
)
from faxbox.shared.bus import PermanentError, RetryLater, TransientError
from faxbox.shared.contracts import (
    FailureClass,
    FaxFailed,
    FaxMessage,
    FaxSent,
    InboundFaxFailed,
    InboundFaxReceived,
    NotificationKind,
    NotificationSent,
    OutboundFaxRejected,
)
from faxbox.shared.outbox import Decided, DecisionStore, Recorded
from faxbox.shared.ports import DocumentReader
from faxbox.shared.store import DocumentCorrupt, Faxbox, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deps:
    directory: Directory
    documents: DocumentReader
    claims: SendClaims
    decisions: DecisionStore
    mailer: Mailer
    sender: str
    message_id_domain: str


# --- the five outcomes -------------------------------------------------------------------


async def on_sent(event: FaxSent, deps: Deps) -> Decided | None:
    faxbox = await _faxbox(deps, event.faxbox_id)
    if not faxbox.success_notifications:
        log.info("success mails are off for faxbox %s; nothing to send", faxbox.id)
        return None
    recipients = await _user_recipients(deps, event.user_id, faxbox)
    thumbnail: bytes | None = None
    try:
        thumbnail = thumbnail_png(await deps.documents.get(event.transmitted_tiff))
    except (NotFound, DocumentCorrupt, UnidentifiedImageError, OSError, ValueError) as exc:
        log.warning("no preview of the transmitted page, sending without it: %s", exc)
    mail = sent_mail(event, timezone=faxbox.timezone, thumbnail=thumbnail)
    return await deliver(deps, event, NotificationKind.sent, recipients, mail)


async def on_failed(event: FaxFailed, deps: Deps) -> Decided | None:
    if event.failure.failure_class is FailureClass.cancelled:
        log.info("the fax was cancelled by its sender; no mail about it")
        return None
    faxbox = await _faxbox(deps, event.faxbox_id)
    recipients = await _user_recipients(deps, event.user_id, faxbox)
    mail = failed_mail(event, timezone=faxbox.timezone)
    return await deliver(deps, event, NotificationKind.failed, recipients, mail)


async def on_rejected(event: OutboundFaxRejected, deps: Deps) -> Decided | None:
    faxbox = await _faxbox(deps, event.faxbox_id) if event.faxbox_id else None
    recipients = await _user_recipients(deps, event.user_id, faxbox)
    try:
        account = await deps.directory.get_account(event.account_id)
    except NotFound as exc:
        raise PermanentError(str(exc)) from None
    mail = rejected_mail(
        destination_raw=event.destination_raw,
        reasons=event.reasons,
        realm=account.realm,
        in_reply_to=event.source_message_id,
    )
    return await deliver(deps, event, NotificationKind.rejected, recipients, mail)


async def on_received(event: InboundFaxReceived, deps: Deps) -> Decided | None:
    faxbox = await _faxbox(deps, event.faxbox_id)
    recipients = await _owner_recipients(deps, faxbox)
    try:
        pdf = await deps.documents.get(event.pdf)
    except (NotFound, DocumentCorrupt) as exc:
        raise PermanentError(f"the received fax's PDF cannot be read: {exc}") from None
    mail = received_mail(event, timezone=faxbox.timezone, pdf=pdf)
    return await deliver(deps, event, NotificationKind.received, recipients, mail)


async def on_inbound_failed(event: InboundFaxFailed, deps: Deps) -> Decided | None:
    faxbox = await _faxbox(deps, event.faxbox_id)
    recipients = await _owner_recipients(deps, faxbox)
    partial: bytes | None = None
    if event.partial_pdf is not None:
        try:
            partial = await deps.documents.get(event.partial_pdf)
        except (NotFound, DocumentCorrupt) as exc:
            log.warning("the partial pages cannot be read, reporting without them: %s", exc)
    mail = inbound_failed_mail(event, timezone=faxbox.timezone, partial_pdf=partial)
    return await deliver(deps, event, NotificationKind.inbound_failed, recipients, mail)


class Notify(Protocol):
    def __call__(self, event: Any, deps: Deps) -> Awaitable[Decided | None]: ...


HANDLERS: Final[Mapping[type[FaxMessage], Notify]] = {
    OutboundFaxRejected: on_rejected,
    FaxSent: on_sent,
    FaxFailed: on_failed,
    InboundFaxReceived: on_received,
    InboundFaxFailed: on_inbound_failed,
}


# --- delivery, once ----------------------------------------------------------------------


async def deliver(
    deps: Deps,
    event: FaxMessage,
    kind: NotificationKind,
    recipients: list[str],
    mail: Mail,
) -> Decided:
    """Send ``mail`` unless this fax's ``kind`` mail went out already."""
    key = f"{event.fax_id}:{kind.value}"
    if (earlier := await _sent_before(deps, key)) is not None:
        return earlier
    try:
        claim = await deps.claims.claim(key, new_message_id(deps.message_id_domain))
    except ClaimBusy as exc:
        raise RetryLater(str(exc), exc.retry_in_s) from None
    # A worker may have finished it between our look and our claim.
    if (earlier := await _sent_before(deps, key)) is not None:
        return earlier
    if claim.maybe_sent_before:
        log.warning(
            "an earlier attempt stopped after handing %s to the server, maybe; sending again "
            "with the same Message-ID %s",
            key,
            claim.smtp_message_id,
        )
    now = _now()
    message = to_message(
        mail,
        sender=deps.sender,
        recipients=recipients,
        message_id=claim.smtp_message_id,
        date=now,
    )
    try:
        await deps.mailer.send(message, recipients)
    except MailDeferred as exc:
        await deps.claims.release(claim, str(exc))
        raise TransientError(str(exc)) from None
    except MailRefused as exc:
        await deps.claims.release(claim, str(exc))
        raise PermanentError(str(exc)) from None
    log.info("%s mail sent to %s", kind.value, ", ".join(recipients))
    sent = NotificationSent(
        # The same id on every announcement, so consumers see one notification.
        message_id=uuid.uuid5(uuid.NAMESPACE_URL, f"faxbox:{event.fax_id}:{kind}").hex,
        occurred_at=now,
        fax_id=event.fax_id,
        account_id=event.account_id,
        month=event.month,
        kind=kind,
        recipients=tuple(recipients),
        smtp_message_id=claim.smtp_message_id,
    )
    return Decided(key, (sent,))


async def _sent_before(deps: Deps, key: str) -> Recorded | None:
    earlier = await deps.decisions.get(key)
    if earlier is not None:
        log.info("the %s mail was sent already; not sending again", key)
    return earlier


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# --- who gets it -------------------------------------------------------------------------


async def _faxbox(deps: Deps, faxbox_id: str) -> Faxbox:
    try:
        return await deps.directory.get_faxbox(faxbox_id)
    except NotFound as exc:
        raise PermanentError(str(exc)) from None


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


async def _user_recipients(deps: Deps, user_id: str, faxbox: Faxbox | None) -> list[str]:
    """The user's address, or the alternate one when set, plus the faxbox's extras."""
    try:
        user = await deps.directory.get_user(user_id)
    except NotFound as exc:
        raise PermanentError(str(exc)) from None
    extras = list(faxbox.extra_recipients) if faxbox else []
    return _unique([user.alternate_email or user.email, *extras])


async def _owner_recipients(deps: Deps, faxbox: Faxbox) -> list[str]:
    return await _user_recipients(deps, faxbox.owner_user_id, faxbox)
