"""The fax history document, as the history-writer keeps it and the portal reads it.

One document per fax, ``_id`` = the fax id, in the collection of the fax's account and
creation month (``fax_history_<account>_<YYYYMM>``). The history-writer builds it from
the fax's events, in whatever order and however often they arrive, so:

* fields that are facts of the fax (numbers, user, documents) are the same in every
  event that carries them;
* ``status`` only moves to a higher ``status_rank`` (a late attempt failure never
  overwrites "sent"); ``result``, ``pages`` and ``statistics`` travel with the status.
  Stored, they live in the sub-document ``state`` (``{rank, status, result, pages,
  statistics}``, rank first) that the writer updates with ``$max``, so the highest rank
  wins atomically in one ``_id`` update; this model lifts them to the top level.
  Query the stored status as ``state.status`` (``status_rank`` is top level too);
* ``timeline`` and ``notifications`` hold each event once. Stored, they are in arrival
  order; this model presents them sorted by time, so every arrival order reads the same.
* ``created_at`` is the earliest event time seen, kept inside the collection's month
  (an event that happened after the month ended is clamped to its last millisecond), so
  date-range queries find the fax in the month that holds it.

A document can be incomplete for a while (a ``NotificationSent`` may arrive before the
fax's own events), so everything except the keys is optional.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from faxbox.shared.contracts import DocumentRef, FailureReason, PageReport


class FaxStatus(StrEnum):
    requested = "requested"
    sending = "sending"  # a call is being placed or is on the line
    retrying = "retrying"
    sent = "sent"
    partially_sent = "partially_sent"  # failed after some pages were confirmed
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"
    received = "received"
    receive_failed = "receive_failed"


class StatusRank(IntEnum):
    """Order of statuses: a status is stored only if its rank is higher than the stored one.

    ``retrying`` takes ``RETRYING + 2·attempt`` and ``sending`` one less, so each call
    of a fax moves it forward: sending (1) < retrying (1) < sending (2) < ...; the gap up
    to ``REJECTED`` leaves room for every allowed attempt. Documents written before
    ``sending`` existed hold ``RETRYING + attempt``, which the new ranks never undercut
    by more than the attempt itself. Terminal outcomes rank above everything; success
    above failure.
    """

    NONE = 0
    REQUESTED = 10
    RETRYING = 20
    REJECTED = 80
    FAILED = 90
    SUCCEEDED = 91


MAX_RETRYING_RANK = StatusRank.REJECTED - 1


def retrying_rank(attempt: int) -> int:
    return min(StatusRank.RETRYING + 2 * attempt, MAX_RETRYING_RANK)


def sending_rank(attempt: int) -> int:
    return min(StatusRank.RETRYING + 2 * attempt - 1, MAX_RETRYING_RANK - 1)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class HistoryResult(_Record):
    """Why the fax did not go through (None when it did)."""

    failure_class: str
    code: int | str = Field(description="T.30 completion code, or a rejection code.")
    text: str
    reason: FailureReason | None = Field(default=None, description="The stable reason.")


class HistoryStatistics(_Record):
    bit_rate: int
    ecm: bool
    x_resolution: int = Field(description="Pixels per metre, as T.30 reports it.")
    y_resolution: int
    remote_station_id: str = ""
    duration_s: float


class HistoryNotification(_Record):
    kind: str
    recipients: list[str]
    smtp_message_id: str
    at: datetime


class TimelineEntry(_Record):
    message_id: str
    type: str
    at: datetime
    summary: str


class HistoryRecord(_Record):
    id: str = Field(alias="_id", description="The fax id.")
    account_id: str
    month: str
    direction: Literal["outbound", "inbound"] | None = None
    status: FaxStatus | None = None
    status_rank: int = 0
    user_id: str | None = None
    faxbox_id: str | None = None
    local_number: str | None = Field(
        default=None, description="Inbound: the called number; outbound: our caller id."
    )
    remote_number: str | None = Field(
        default=None, description="Outbound: the destination (as written if rejected)."
    )
    sender_email: str | None = None
    source_message_id: str | None = None
    pages: int | None = Field(default=None, description="Pages sent or received.")
    pages_total: int | None = None
    attempts: int = 0
    calls: int | None = Field(
        default=None,
        description="Outbound, once sent: the calls that carried it (a redial after a cut "
        "call sends only the pages not yet confirmed).",
    )
    result: HistoryResult | None = None
    rejection_reasons: list[dict[str, str]] = Field(default_factory=list)
    statistics: HistoryStatistics | None = None
    page_report: list[PageReport] = Field(
        default_factory=list, description="The last call's pages (travels with the status)."
    )
    documents: dict[str, DocumentRef] = Field(default_factory=dict)
    notifications: list[HistoryNotification] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _lift_state(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("state"), dict):
            state = data["state"]
            data = {**data}
            data["status_rank"] = state.get("rank", 0)
            for name in ("status", "result", "pages", "statistics"):
                data[name] = state.get(name)
            data["page_report"] = state.get("page_report") or []
        return data

    @field_validator("timeline")
    @classmethod
    def _timeline_in_time_order(cls, value: list[TimelineEntry]) -> list[TimelineEntry]:
        return sorted(value, key=lambda e: (e.at, e.message_id))

    @field_validator("notifications")
    @classmethod
    def _notifications_in_time_order(
        cls, value: list[HistoryNotification]
    ) -> list[HistoryNotification]:
        return sorted(value, key=lambda n: (n.at, n.kind, n.smtp_message_id))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> HistoryRecord:
        return cls.model_validate(doc)
