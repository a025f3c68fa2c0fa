"""Every message that crosses the bus, as frozen pydantic models.

Rules (see docs/architecture.md):
- commands are imperative (``OutboundFaxRequested`` is the one command: "fax this"),
  events are past tense;
- every message carries ``message_id``, ``occurred_at``, ``schema_version`` and the fax id
  as correlation id; every fax message also carries the account id and the month
  (``YYYYMM``) of the fax's creation, which together name its history collection and
  document bucket;
- messages carry references to documents in GridFS, never document bytes;
- changes are additive; a breaking change is a new type.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MonthKey = Annotated[str, StringConstraints(pattern=r"^\d{4}(0[1-9]|1[0-2])$")]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _require_aware(value: datetime) -> datetime:
    # Naive datetimes silently shift by the host's offset once stored; refuse them.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must carry a time zone")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def month_of(moment: datetime) -> str:
    return _require_aware(moment).strftime("%Y%m")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DocumentRef(Frozen):
    """Where a document lives: the GridFS bucket of one account-month, and its file id."""

    account_id: Identifier
    month: MonthKey
    file_id: Identifier
    filename: str
    content_type: str
    length: int = Field(ge=0)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Message(Frozen):
    """Envelope fields shared by every contract."""

    message_id: Identifier = Field(default_factory=new_id)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    schema_version: int = Field(default=1, ge=1)
    fax_id: Identifier = Field(description="Correlation id: the fax this message is about.")


class FaxMessage(Message):
    """A message about a fax that belongs to an account; the month names its storage."""

    account_id: Identifier
    month: MonthKey


# --- intake -----------------------------------------------------------------------------


class OversizeMail(Frozen):
    """A mail over the intake's size cap: only its header block was read and stored."""

    size: int = Field(ge=0, description="RFC822.SIZE as the IMAP server reported it.")
    limit: int = Field(ge=0, description="The cap it exceeded, in bytes.")


class MailReceived(Message):
    """A raw email was taken from an intake mailbox and stored; the validator decides.

    The account is not known yet (the validator finds it from the recipient's realm),
    so this is the one message without an account id: the raw mail lives in the
    intake bucket of the month it arrived.
    """

    mailbox: str
    uid_validity: int = Field(ge=0)
    uid: int = Field(ge=1)
    rfc822_message_id: str | None = None
    raw: DocumentRef
    received_at: AwareDatetime
    oversize: OversizeMail | None = Field(
        default=None,
        description="Set when the mail was over the size cap: raw holds its header block only.",
    )


class FaxSettings(Frozen):
    """How the fax is presented on the line, copied from the faxbox at request time."""

    caller_id: str | None = None
    identity: Annotated[str, StringConstraints(max_length=20)] = ""
    header_name: str = ""
    timezone: str = "UTC"
    resolution: Literal["fine", "standard"] = "fine"
    header_format: str | None = Field(
        default=None,
        description="The faxbox's page header line (faxbox.render.header syntax, like "
        "HylaFAX's TagLineFormat); None: the platform's default format.",
    )


class RetryPolicy(Frozen):
    attempts: int = Field(default=3, ge=1, le=10)
    delays_s: tuple[int, ...] = (120, 300)

    def delay_before_attempt(self, attempt: int) -> int:
        """Seconds to wait before attempt number ``attempt`` (2 = the first redial)."""
        if attempt < 2:
            return 0
        index = min(attempt - 2, len(self.delays_s) - 1)
        return self.delays_s[index] if self.delays_s else 0


class OutboundFaxRequested(FaxMessage):
    """Command: fax this rendered document to this number."""

    user_id: Identifier
    faxbox_id: Identifier
    sender_email: str
    destination: E164
    settings: FaxSettings
    retry_policy: RetryPolicy = RetryPolicy()
    original: DocumentRef
    fax_tiff: DocumentRef
    pages: int = Field(ge=1)
    source_message_id: str | None = Field(
        default=None, description="RFC 5322 Message-ID of the user's email, for threading."
    )
    attempt: int = Field(default=1, ge=1)
    route_flags: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,40}$")], ...] = (
        Field(
            default=(),
            description="Flags the route grants this fax: a carrier with require_flags takes "
            "the call only if it carries all of them; none means carriers without.",
        )
    )


class RejectionCode(StrEnum):
    invalid_number = "invalid_number"
    blocked_number = "blocked_number"
    no_attachment = "no_attachment"
    too_many_attachments = "too_many_attachments"
    empty_attachment = "empty_attachment"
    attachment_too_large = "attachment_too_large"
    encrypted_pdf = "encrypted_pdf"
    unreadable_document = "unreadable_document"
    too_many_pages = "too_many_pages"
    faxbox_disabled = "faxbox_disabled"
    # Older messages only: sender_not_authenticated replaced it.
    unauthenticated_sender = "unauthenticated_sender"
    # No trusted mail server proved the sender (see the validator's authz).
    sender_not_authenticated = "sender_not_authenticated"
    # A destination outside the countries the account may fax.
    country_not_allowed = "country_not_allowed"
    daily_page_limit = "daily_page_limit"
    # A document a reader could open but that was not rendered for a reason not listed
    # here; the renderer names every cause it knows with the codes below.
    rendering_failed = "rendering_failed"
    unsupported_document = "unsupported_document"
    page_too_large = "page_too_large"
    # More pixels or memory than preparing a fax may take (an image bomb, a huge scan).
    too_complex = "too_complex"
    rendering_timeout = "rendering_timeout"
    # The email itself: more fax numbers than allowed, or past a cap on what is read.
    too_many_recipients = "too_many_recipients"
    mail_too_large = "mail_too_large"
    headers_too_large = "headers_too_large"
    too_many_addresses = "too_many_addresses"
    too_many_parts = "too_many_parts"
    nested_too_deeply = "nested_too_deeply"
    # A resend whose document is no longer stored (its month was dropped by retention).
    document_unavailable = "document_unavailable"


class RejectionReason(Frozen):
    code: RejectionCode
    message: str = Field(min_length=1, description="Plain-language text for the user.")


class OutboundFaxRejected(FaxMessage):
    """A known sender's email could not become a fax; every reason is listed."""

    user_id: Identifier
    faxbox_id: Identifier | None = None
    sender_email: str
    destination_raw: str
    reasons: tuple[RejectionReason, ...] = Field(min_length=1)
    source_message_id: str | None = None
    raw: DocumentRef
    fax_ids: tuple[Identifier, ...] = Field(
        default=(),
        description="Every fax the rejected submission named up front (API and portal "
        "submissions answer with one fax id per number before deciding), fax_id among "
        "them; empty for an email, whose rejection is its one fax.",
    )


class FaxSubmitted(FaxMessage):
    """A fax was submitted without email (the API or the portal's "Send a fax" page).

    The validator decides it as it decides an email: the same faxbox rules, number
    rules and limits, rendering and page limits, one ``OutboundFaxRequested`` per
    number (fax ids ``fax_id``, ``<fax_id>-2``, ...) or one ``OutboundFaxRejected``.
    """

    user_id: Identifier = Field(description="Who submitted it.")
    faxbox_id: Identifier
    numbers: tuple[Annotated[str, StringConstraints(max_length=64)], ...] = Field(
        min_length=1, description="The destinations as written."
    )
    document: DocumentRef
    channel: Literal["api", "portal"]
    resend_of: Identifier | None = Field(
        default=None, description="The fax whose document is sent again."
    )


class FaxCancelRequested(FaxMessage):
    """Stop this fax: queued or waiting for a redial it ends now; on the line it is
    hung up. Too late once it was sent or failed."""

    user_id: Identifier = Field(description="Who cancelled it.")


# --- transmission -------------------------------------------------------------------------


class FailureClass(StrEnum):
    line = "line"
    protocol = "protocol"
    document = "document"
    resources = "resources"
    cancelled = "cancelled"  # the sender cancelled it (API or portal)


class FailureReason(StrEnum):
    """Why a fax did not go (all of it) through, as a stable snake_case value.

    The API, the webhooks and the history show these; docs/api.md lists them with what
    each means and whether sending again may help. New values may be added; none is
    ever renamed.
    """

    # The call itself (SIP).
    user_busy = "user_busy"
    no_answer = "no_answer"
    invalid_number = "invalid_number"
    call_rejected = "call_rejected"
    network_unavailable = "network_unavailable"
    call_failed = "call_failed"
    # The fax conversation (T.30).
    receiver_not_fax = "receiver_not_fax"
    receiver_no_response = "receiver_no_response"
    call_dropped = "call_dropped"
    training_failed = "training_failed"
    receiver_incompatible = "receiver_incompatible"
    receiver_refused = "receiver_refused"
    pages_not_confirmed = "pages_not_confirmed"
    protocol_error = "protocol_error"
    # Receiving (inbound): the other side sent.
    sender_not_fax = "sender_not_fax"
    sender_no_response = "sender_no_response"
    # The document, before or during the call.
    document_unreadable = "document_unreadable"
    document_unavailable = "document_unavailable"
    document_encrypted = "document_encrypted"
    document_too_large = "document_too_large"
    too_many_pages = "too_many_pages"
    page_too_large = "page_too_large"
    no_document = "no_document"
    too_many_documents = "too_many_documents"
    # Rules of the account and faxbox.
    number_blocked = "number_blocked"
    country_not_allowed = "country_not_allowed"
    too_many_recipients = "too_many_recipients"
    daily_page_limit = "daily_page_limit"
    faxbox_disabled = "faxbox_disabled"
    sender_not_authenticated = "sender_not_authenticated"
    email_unreadable = "email_unreadable"
    # Ours.
    no_available_resources = "no_available_resources"
    internal_error = "internal_error"
    cancelled = "cancelled"


class FaxFailure(Frozen):
    failure_class: FailureClass
    code: int = Field(description="spandsp T.30 completion code, or a negative internal code.")
    text: str = Field(min_length=1)
    sip_status: int | None = None
    reason: FailureReason | None = Field(
        default=None,
        description="The stable reason (None in events from before reasons existed: "
        "faxbox.shared.faxview.failure_reason derives one).",
    )


class PageReport(Frozen):
    """One page of a call, from the T.30 phase D statistics of its last transmission."""

    page: int = Field(ge=1, description="The page's number in the whole document.")
    confirmed: bool = Field(
        description="Sending: the far end confirmed it (MCF, RTP or PIP); receiving: we kept it."
    )
    result: str = Field(
        description="The T.30 frame that ended the page: the receiver's verdict when "
        "sending (MCF, RTP, RTN, PIP, PIN), the sender's post-page command when "
        "receiving (MPS, EOP, EOM); empty if none came."
    )
    bit_rate: int = Field(ge=0)
    ecm: bool
    x_resolution: int = Field(ge=0, description="Pixels per metre, as T.30 reports it.")
    y_resolution: int = Field(ge=0)
    encoding: str = Field(description="T.4 1D, T.4 2D or T.6 (as on the line).")
    length: int = Field(ge=0, description="Rows of the page.")
    image_bytes: int = Field(ge=0)
    bad_rows: int = Field(ge=0)
    longest_bad_row_run: int = Field(ge=0)
    ecm_retries: int = Field(ge=0)
    transmissions: int = Field(default=1, ge=1, description="Times the page was sent in the call.")


class TransferStatistics(Frozen):
    pages_transferred: int = Field(ge=0)
    pages_total: int = Field(ge=0)
    bit_rate: int = Field(ge=0)
    ecm: bool
    x_resolution: int = Field(ge=0, description="Pixels per metre, as T.30 reports it.")
    y_resolution: int = Field(ge=0)
    remote_station_id: str = ""
    duration_s: float = Field(ge=0)


class FaxAttemptStarted(FaxMessage):
    """A call for this fax is being placed (attempt N)."""

    user_id: Identifier
    faxbox_id: Identifier
    destination: E164
    caller_id: str | None = None
    attempt: int = Field(ge=1)
    carrier_id: str
    pages_total: int = Field(ge=0)


class FaxAttemptFailed(FaxMessage):
    destination: E164
    attempt: int = Field(ge=1)
    attempts_allowed: int = Field(ge=1)
    failure: FaxFailure
    pages_sent: int = Field(ge=0)
    carrier_id: str | None = None
    next_attempt_at: AwareDatetime | None
    carrier_failover: bool = Field(
        default=False,
        description="The carrier failed (5xx, timeout, no connection) and the next eligible "
        "carrier is tried at once, within the same attempt.",
    )
    page_report: tuple[PageReport, ...] = ()


class FaxSent(FaxMessage):
    user_id: Identifier
    faxbox_id: Identifier
    destination: E164
    attempts: int = Field(ge=1)
    calls: int = Field(
        default=1,
        ge=1,
        description="Calls that carried the fax: a redial after a cut call sends only the "
        "pages the far end had not confirmed, so the fax may have arrived over several.",
    )
    carrier_id: str
    statistics: TransferStatistics
    transmitted_tiff: DocumentRef
    source_message_id: str | None = None
    page_report: tuple[PageReport, ...] = Field(
        default=(),
        description="Each page of the document, as reported by the call that delivered it "
        "(a fax carried by several calls has pages from each).",
    )


class FaxFailed(FaxMessage):
    user_id: Identifier
    faxbox_id: Identifier
    destination: E164
    attempts: int = Field(ge=0)
    failure: FaxFailure
    pages_sent: int = Field(ge=0)
    pages_total: int = Field(ge=0)
    source_message_id: str | None = None
    page_report: tuple[PageReport, ...] = Field(
        default=(), description="The last call's pages (none if no call got that far)."
    )
    transmitted_tiff: DocumentRef | None = Field(
        default=None, description="The document as the last call sent it, header included."
    )

    @property
    def partial(self) -> bool:
        """Some but not all pages were confirmed after the last attempt."""
        return 0 < self.pages_sent < self.pages_total


# --- reception ---------------------------------------------------------------------------


class InboundFaxReceived(FaxMessage):
    faxbox_id: Identifier
    user_id: Identifier
    caller_number: str
    called_number: str
    statistics: TransferStatistics
    tiff: DocumentRef
    pdf: DocumentRef
    page_report: tuple[PageReport, ...] = ()


class InboundFaxFailed(FaxMessage):
    faxbox_id: Identifier
    user_id: Identifier
    caller_number: str
    called_number: str
    failure: FaxFailure
    pages_received: int = Field(ge=0)
    partial_pdf: DocumentRef | None = None
    page_report: tuple[PageReport, ...] = ()


# --- notification ------------------------------------------------------------------------


class NotificationKind(StrEnum):
    sent = "sent"
    failed = "failed"
    rejected = "rejected"
    received = "received"
    inbound_failed = "inbound_failed"


class NotificationSent(FaxMessage):
    kind: NotificationKind
    recipients: tuple[str, ...] = Field(min_length=1)
    smtp_message_id: str


# --- webhooks ----------------------------------------------------------------------------


class WebhookDeliveryRequested(Message):
    """Command to the webhooks service: POST this recorded delivery (again)."""

    account_id: Identifier
    webhook_id: Identifier
    event_id: Identifier
    month: MonthKey = Field(description="The month of the webhook's delivery log it is in.")
    replay: bool = Field(
        default=False, description="Asked for from the portal or CLI: one more attempt."
    )


ALL_CONTRACTS: tuple[type[Message], ...] = (
    MailReceived,
    FaxSubmitted,
    FaxCancelRequested,
    OutboundFaxRequested,
    OutboundFaxRejected,
    FaxAttemptStarted,
    FaxAttemptFailed,
    FaxSent,
    FaxFailed,
    InboundFaxReceived,
    InboundFaxFailed,
    NotificationSent,
    WebhookDeliveryRequested,
)

_BY_NAME: dict[str, type[Message]] = {contract.__name__: contract for contract in ALL_CONTRACTS}


def contract_by_name(name: str) -> type[Message]:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown message type {name!r}") from None


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: contract.model_json_schema() for name, contract in _BY_NAME.items()}
