"""Building the mails: Jinja2 templates (plain text + HTML), headers, attachments.

Pure functions of their inputs (no I/O), so every mail can be checked in unit tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from faxbox.fax.outcome import describe
from faxbox.render import page_png
from faxbox.shared import numbers
from faxbox.shared.contracts import (
    FailureClass,
    FaxFailed,
    FaxFailure,
    FaxSent,
    InboundFaxFailed,
    InboundFaxReceived,
    PageReport,
    RejectionCode,
    RejectionReason,
)

_ENV = Environment(
    loader=PackageLoader("faxbox.notifier", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    keep_trailing_newline=True,
)

THUMBNAIL_WIDTH = 300
EXAMPLE_NUMBER = "+14155550123"

FIXES: dict[RejectionCode, str] = {
    RejectionCode.invalid_number: (
        "Write the fax number in the address with digits only: 10 digits for the US and "
        "Canada, or + and the country code for other countries."
    ),
    RejectionCode.blocked_number: (
        "This kind of number cannot be faxed from your account; ask your administrator."
    ),
    RejectionCode.no_attachment: "Attach the document to fax as a PDF or TIFF file.",
    RejectionCode.too_many_attachments: (
        "Attach exactly one PDF or TIFF file; send several documents as separate emails, "
        "or combine them into one PDF."
    ),
    RejectionCode.empty_attachment: "The attachment was empty: attach the document again.",
    RejectionCode.attachment_too_large: "Send a smaller file, or split it into several faxes.",
    RejectionCode.encrypted_pdf: "Remove the password from the PDF, then send it again.",
    RejectionCode.unreadable_document: (
        "Save or print the document as a new PDF and send that; the file may be damaged."
    ),
    RejectionCode.too_many_pages: "Split the document into several smaller faxes.",
    RejectionCode.faxbox_disabled: "Ask your administrator to enable your faxbox.",
    RejectionCode.unauthenticated_sender: (
        "Send from your own address through your usual mail server, so the mail can be verified."
    ),
    RejectionCode.sender_not_authenticated: (
        "If you sent this email, send it again from your own mail account, the way you send "
        "other mail (not through a forwarding or bulk-mail service). If you did not send it, "
        "someone tried to fax in your name: tell your administrator."
    ),
    RejectionCode.country_not_allowed: (
        "Your account may only fax to certain countries; your reseller or the platform's "
        "administrator can allow more."
    ),
    RejectionCode.daily_page_limit: (
        "Try again after the count starts over (midnight UTC), or ask your administrator."
    ),
    RejectionCode.rendering_failed: (
        "Save or print the document as a new PDF and send that; if it keeps failing, "
        "contact support."
    ),
    RejectionCode.unsupported_document: (
        "Save the document as a PDF, or as a TIFF with ordinary compression, and send that."
    ),
    RejectionCode.page_too_large: (
        "Print or export the document on ordinary pages (A4 or Letter) and send that."
    ),
    RejectionCode.too_complex: (
        "Scan or export the document again at 200 or 300 dpi (plenty for a fax), or print "
        "it to a new PDF, and send that."
    ),
    RejectionCode.rendering_timeout: (
        "Print the document to a new PDF, or split it into smaller parts, and send that."
    ),
    RejectionCode.too_many_recipients: (
        "Send the document to fewer fax numbers at once; several emails are fine."
    ),
    RejectionCode.mail_too_large: (
        "Send a smaller email: the document on its own, printed to PDF again or scanned in "
        "black and white, or split over several emails."
    ),
    RejectionCode.headers_too_large: "Send the document in a new email to fewer addresses.",
    RejectionCode.too_many_addresses: "Send the document in a new email to fewer addresses.",
    RejectionCode.too_many_parts: "Attach the document to a new, plain email and send that.",
    RejectionCode.nested_too_deeply: "Attach the document to a new, plain email and send that.",
    RejectionCode.country_not_allowed: (
        "Your organisation may not fax that country; ask your administrator."
    ),
    RejectionCode.document_unavailable: (
        "The document is no longer stored; send it again as a new fax."
    ),
}

_RESOURCES_HINT = "No telephone line was free for this fax. Try again later."
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9+_-]+")


@dataclass(frozen=True, slots=True)
class Attachment:
    data: bytes
    filename: str
    maintype: str = "application"
    subtype: str = "pdf"


@dataclass(slots=True)
class Mail:
    """A mail before it gets its Message-ID and recipients."""

    subject: str
    text: str
    html: str
    in_reply_to: str | None = None
    inline_png: tuple[str, bytes] | None = None  # (content id without <>, data)
    attachments: list[Attachment] = field(default_factory=list)


def to_message(
    mail: Mail,
    *,
    sender: str,
    recipients: list[str],
    message_id: str,
    date: datetime,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(mail.subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    # RFC 3834: an automatic answer; well-behaved systems never answer it in turn.
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    if mail.in_reply_to:
        reference = _one_line(mail.in_reply_to)
        message["In-Reply-To"] = reference
        message["References"] = reference
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    if mail.inline_png is not None:
        cid, data = mail.inline_png
        html_part = message.get_body(preferencelist=("html",))
        assert html_part is not None
        html_part.add_related(data, "image", "png", cid=f"<{cid}>", filename="page1.png")
    for attachment in mail.attachments:
        message.add_attachment(
            attachment.data,
            maintype=attachment.maintype,
            subtype=attachment.subtype,
            filename=attachment.filename,
        )
    return message


def new_message_id(domain: str) -> str:
    return make_msgid(idstring="fax", domain=domain)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def local_time(moment: datetime, timezone: str) -> datetime:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone)


def _shown(moment: datetime, timezone: str) -> str:
    return local_time(moment, timezone).strftime("%Y-%m-%d %H:%M:%S %Z")


def duration(seconds: float) -> str:
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def page_rows(report: tuple[PageReport, ...]) -> list[dict[str, object]]:
    """The per-page report as the mails show it (resolutions in dpi)."""
    return [
        {
            "page": p.page,
            "confirmed": "yes" if p.confirmed else "no",
            "result": p.result or "-",
            "bit_rate": p.bit_rate,
            "resolution": f"{round(p.x_resolution * 0.0254)}x{round(p.y_resolution * 0.0254)}",
            "coding": p.encoding,
            "ecm_retries": p.ecm_retries,
            "bad_rows": p.bad_rows,
            "sent": p.transmissions,
        }
        for p in report
    ]


def _mail(
    kind: str,
    subject: str,
    context: Mapping[str, Any],
    *,
    in_reply_to: str | None = None,
    inline_png: tuple[str, bytes] | None = None,
    attachments: Sequence[Attachment] = (),
) -> Mail:
    """A mail of ``subject`` whose bodies are the templates of ``kind`` with ``context``."""
    return Mail(
        subject=subject,
        text=_ENV.get_template(f"{kind}.txt.j2").render(**context),
        html=_ENV.get_template(f"{kind}.html.j2").render(**context),
        in_reply_to=in_reply_to,
        inline_png=inline_png,
        attachments=list(attachments),
    )


def _pages(count: int) -> str:
    return f"{count} page{'s' if count != 1 else ''}"


def thumbnail_png(tiff: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """Page 1 of a fax TIFF, header line included, as a small grey PNG."""
    return page_png(tiff, width)


def sent_mail(event: FaxSent, *, timezone: str, thumbnail: bytes | None) -> Mail:
    """The mail telling the sender their fax went through; ``thumbnail``: page 1."""
    stats = event.statistics
    cid = "page1@faxbox" if thumbnail else None
    context = dict(
        pages_report=page_rows(event.page_report),
        number=event.destination,
        pages=stats.pages_transferred,
        pages_total=stats.pages_total,
        duration=duration(stats.duration_s),
        remote_station_id=stats.remote_station_id.strip(),
        attempts=event.attempts,
        calls=event.calls,
        sent_at=_shown(event.occurred_at, timezone),
        thumbnail=cid,
    )
    return _mail(
        "sent",
        f"Fax to {event.destination} sent ({_pages(stats.pages_transferred)})",
        context,
        in_reply_to=event.source_message_id,
        inline_png=(cid, thumbnail) if cid and thumbnail else None,
    )


def failure_words(failure: FaxFailure, *, receiving: bool = False) -> tuple[str, str | None, str]:
    """(reason in plain words, T.30 code name or None, what to try)."""
    if failure.code >= 0:
        info = describe(failure.code, receiving=receiving)
        return info.message, info.name, info.hint
    if failure.failure_class is FailureClass.resources:
        return failure.text, None, _RESOURCES_HINT
    return failure.text, None, "Try again later. If it keeps happening, contact support."


def failed_mail(event: FaxFailed, *, timezone: str) -> Mail:
    """The mail telling the sender their fax failed for good, or was only partly sent."""
    reason, code_name, hint = failure_words(event.failure)
    number = event.destination
    context = dict(
        partial=event.partial,
        pages_report=page_rows(event.page_report),
        number=number,
        reason=reason,
        code=event.failure.code,
        code_name=code_name,
        attempts=event.attempts,
        pages_sent=event.pages_sent,
        pages_total=event.pages_total,
        failed_at=_shown(event.occurred_at, timezone),
        hint=hint,
    )
    subject = (
        f"Fax to {number} partly sent ({event.pages_sent} of {event.pages_total} pages)"
        if event.partial
        else f"Fax to {number} failed"
    )
    return _mail("failed", subject, context, in_reply_to=event.source_message_id)


def example_address(destination_raw: str, realm: str) -> str:
    """The To address for what they wrote if it is a valid number, else a sample one."""
    checked = numbers.check(destination_raw)
    number = checked.e164 if isinstance(checked, numbers.NormalizedNumber) else EXAMPLE_NUMBER
    return numbers.fax_address(number, realm)


def rejected_mail(
    *,
    destination_raw: str,
    reasons: tuple[RejectionReason, ...],
    realm: str,
    in_reply_to: str | None,
) -> Mail:
    shown = [{"message": r.message, "fix": FIXES.get(r.code, "Contact support.")} for r in reasons]
    context = dict(
        destination=destination_raw,
        reasons=shown,
        example_address=example_address(destination_raw, realm),
    )
    subject = f"Your fax to {destination_raw} was not sent"
    return _mail("rejected", subject, context, in_reply_to=in_reply_to)


def fax_filename(caller: str, at: datetime, timezone: str, suffix: str = "") -> str:
    """``<caller>_<local date-time>.pdf``, safe as a file name everywhere."""
    who = _UNSAFE_FILENAME.sub("", caller) or "unknown"
    when = local_time(at, timezone).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{who}_{when}{suffix}.pdf"


def received_mail(event: InboundFaxReceived, *, timezone: str, pdf: bytes) -> Mail:
    """The mail bringing a received fax to its faxbox's owner, ``pdf`` attached."""
    caller, pages = event.caller_number, event.statistics.pages_transferred
    filename = fax_filename(caller, event.occurred_at, timezone)
    context = dict(
        caller=caller or "unknown caller",
        called=event.called_number,
        remote_station_id=event.statistics.remote_station_id.strip(),
        pages=pages,
        received_at=_shown(event.occurred_at, timezone),
        filename=filename,
    )
    subject = f"Fax from {caller or 'unknown caller'} ({_pages(pages)})"
    return _mail("received", subject, context, attachments=[Attachment(pdf, filename)])


def inbound_failed_mail(
    event: InboundFaxFailed, *, timezone: str, partial_pdf: bytes | None
) -> Mail:
    """The mail telling a faxbox's owner a fax to them failed, with any pages it had."""
    reason, _name, hint = failure_words(event.failure, receiving=True)
    caller, at = event.caller_number, event.occurred_at
    filename = fax_filename(caller, at, timezone, "_partial") if partial_pdf else None
    context = dict(
        caller=caller or "unknown caller",
        called=event.called_number,
        reason=reason,
        pages=event.pages_received,
        received_at=_shown(at, timezone),
        filename=filename,
        hint=hint,
    )
    subject = f"Fax from {caller or 'unknown caller'} could not be received"
    partial = [Attachment(partial_pdf, filename)] if partial_pdf and filename else []
    return _mail("inbound_failed", subject, context, attachments=partial)
