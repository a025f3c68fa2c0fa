"""Times on the HTML pages in a faxbox's time zone; the JSON API keeps ISO-8601 UTC.

Whose zone: the viewer's own faxbox's (a user reads "my fax at 09:00" in their own
clock). A viewer without a faxbox (most admins) gets the zone the account's faxboxes
share, or UTC when they disagree. Every time shown carries its zone abbreviation, and
where the fax's own faxbox keeps another zone the pages also show the time there, so an
admin and the fax's owner can talk about the same fax. The date filter of the fax list
counts whole days in the viewer's zone, like the times it lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faxbox.shared.store import Store, User


@dataclass(frozen=True, slots=True)
class Zone:
    name: str  # the IANA name, as the faxbox setting holds it
    info: tzinfo

    def local(self, moment: datetime) -> datetime:
        # Stored times are UTC; a naive one (an old document) is UTC too.
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(self.info)

    def format(self, moment: datetime | None, *, seconds: bool = False) -> str:
        """``2026-11-27 15:04 EST``; an empty string for no time."""
        if moment is None:
            return ""
        pattern = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
        return self.local(moment).strftime(pattern)

    def today(self, now: datetime | None = None) -> date:
        return self.local(now or datetime.now(UTC)).date()

    def day_start(self, day: date) -> datetime:
        """The first instant of ``day`` on this zone's clock, in UTC."""
        return datetime.combine(day, time.min, self.info).astimezone(UTC)


UTC_ZONE = Zone("UTC", UTC)


def zone(name: str | None) -> Zone:
    """The zone of a faxbox setting; UTC for none or a name this system does not know
    (the store validates names, but a zone database update could drop one)."""
    if not name or name == "UTC":
        return UTC_ZONE
    try:
        return Zone(name, ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        return UTC_ZONE


def shared_zone(names: Iterable[str | None]) -> Zone:
    """The one zone all the names agree on (missing ones are UTC, the default), or UTC."""
    distinct = {name or "UTC" for name in names}
    return zone(distinct.pop()) if len(distinct) == 1 else UTC_ZONE


@dataclass(frozen=True, slots=True)
class Clock:
    """What the templates get: the viewer's zone and the zone of each faxbox in view."""

    viewer: Zone
    faxboxes: dict[str, Zone]

    def format(self, moment: datetime | None, *, seconds: bool = False) -> str:
        return self.viewer.format(moment, seconds=seconds)

    def for_faxbox(
        self, faxbox_id: str | None, moment: datetime | None, *, seconds: bool = False
    ) -> str:
        """The time on the faxbox's own clock when that reads differently from the
        viewer's; an empty string otherwise."""
        own = self.faxboxes.get(faxbox_id) if faxbox_id else None
        if own is None or moment is None:
            return ""
        shown = own.format(moment, seconds=seconds)
        return "" if shown == self.format(moment, seconds=seconds) else shown


async def clock_for(
    store: Store, user: User, account_id: str, faxbox_ids: Iterable[str | None] = ()
) -> Clock:
    """The clock for ``user`` looking at faxes of ``account_id`` from ``faxbox_ids``."""
    own = await store.list_faxboxes(owner_user_id=user.id)
    if own:
        viewer = zone(own[0].timezone)
    else:
        viewer = shared_zone(await store.faxboxes.distinct("timezone", {"account_id": account_id}))
    return await with_faxboxes(store, Clock(viewer, {}), faxbox_ids)


async def with_faxboxes(store: Store, clock: Clock, faxbox_ids: Iterable[str | None]) -> Clock:
    """``clock`` knowing the zones of these faxboxes too."""
    ids = sorted({i for i in faxbox_ids if i} - clock.faxboxes.keys())
    if not ids:
        return clock
    cursor = store.faxboxes.find({"_id": {"$in": ids}}, {"timezone": 1})
    zones = {doc["_id"]: zone(doc.get("timezone")) async for doc in cursor}
    return Clock(clock.viewer, clock.faxboxes | zones)
