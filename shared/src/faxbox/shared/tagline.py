"""The wording of the page header line ("tag line"): a format string like HylaFAX's
``TagLineFormat``, filled in for one page of one fax.

- ``%`` directives are ``strftime``'s, in the faxbox's time zone (``%Y-%m-%d %H:%M %Z``);
- ``%%`` followed by a letter is one of ours (written doubled because ``strftime`` runs
  first and turns ``%%`` into ``%``): ``%%s`` the sender's name (the faxbox's header
  name), ``%%n`` our number (caller id), ``%%l`` our fax identity (TSI), ``%%d`` the
  number dialled, ``%%i`` the fax id, ``%%p`` the page number and ``%%t`` the pages in
  the whole document; ``%%%%`` is a literal ``%``;
- ``|`` splits the line into fields spread across the page: one field is on the left,
  two are left and right, three left, centre and right, more evenly spaced.

Text is ASCII (accents are folded: "Müller" → "Muller", anything else becomes ``?``).
Here is only the text: ``faxbox.render.header`` draws it. The store checks a faxbox's
format with :func:`check_format` when it is set.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_HEADER_FORMAT: Final = "%%s  %%n|%Y-%m-%d %H:%M %Z|page %%p/%%t"
MAX_FORMAT_LENGTH: Final = 200

_OUR_ESCAPE: Final = re.compile(r"%(.)", re.DOTALL)


class HeaderFormatError(ValueError):
    """The format string cannot be used; the message says what to change."""


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """What a header line can show, for one fax."""

    moment: datetime  # when it is sent (aware)
    timezone: str = "UTC"  # the faxbox's, an IANA name
    sender_name: str = ""
    our_number: str = ""
    identity: str = ""
    destination: str = ""
    fax_id: str = ""


class Presentation(Protocol):
    """How a faxbox presents its faxes: the stored faxbox and a request's settings
    (copied from it) both say it."""

    @property
    def timezone(self) -> str: ...

    @property
    def header_name(self) -> str: ...

    @property
    def caller_id(self) -> str | None: ...

    @property
    def identity(self) -> str: ...


def header_fields(
    box: Presentation, destination: str, fax_id: str, moment: datetime
) -> HeaderFields:
    """The header line's fields of one fax: the transmitter's, and the portal's preview
    of them."""
    return HeaderFields(
        moment=moment,
        timezone=box.timezone,
        sender_name=box.header_name,
        our_number=box.caller_id or "",
        identity=box.identity,
        destination=destination,
        fax_id=fax_id,
    )


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in folded if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in kept)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HeaderFormatError(f"unknown time zone {name!r}") from None


def header_text(fmt: str, fields: HeaderFields, page: int, pages: int) -> tuple[str, ...]:
    """The header line's fields for ``page`` of ``pages`` (raises HeaderFormatError)."""
    local = fields.moment.astimezone(_zone(fields.timezone))
    try:
        dated = local.strftime(fmt)
    except ValueError as exc:
        raise HeaderFormatError(f"the date and time part cannot be used: {exc}") from None
    values = {
        "s": fields.sender_name,
        "n": fields.our_number,
        "l": fields.identity,
        "d": fields.destination,
        "i": fields.fax_id,
        "p": str(page),
        "t": str(pages),
        "%": "%",
    }

    def expand(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter not in values:
            raise HeaderFormatError(
                f"%%{letter} is not a header field; use %%s (sender name), %%n (our number), "
                "%%l (fax identity), %%d (number dialled), %%i (fax id), %%p (page), "
                "%%t (pages) or strftime's single-% date and time codes"
            )
        return values[letter]

    line = _OUR_ESCAPE.sub(expand, dated)
    return tuple(_ascii(part).strip() for part in line.split("|"))


def check_format(fmt: str) -> str:
    """``fmt`` if it can be used (tried on a sample fax), else HeaderFormatError."""
    if len(fmt) > MAX_FORMAT_LENGTH:
        raise HeaderFormatError(f"the header format is longer than {MAX_FORMAT_LENGTH} characters")
    if any(c in "\r\n\t" for c in fmt):
        raise HeaderFormatError("the header format must be one line")
    sample = HeaderFields(
        moment=datetime(2026, 1, 31, 23, 59, tzinfo=ZoneInfo("UTC")),
        sender_name="Name",
        our_number="+15550100",
        identity="ID",
        destination="+15550199",
        fax_id="fax",
    )
    header_text(fmt, sample, 1, 1)
    return fmt
