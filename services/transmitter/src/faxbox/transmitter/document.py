"""The document as it goes on the line: the fax TIFF with our header line on every page.

The validator's fax TIFF has no header; it is drawn here, at the time of the call, in
the faxbox's wording and time zone, ``page x/y`` counted in the whole document
(``faxbox.render.header``; spandsp is told to draw nothing). What was sent is kept: the
TIFF of the call that ended the fax is stored in the fax's account-month bucket and
named by ``FaxSent``/``FaxFailed`` as ``transmitted_tiff``, so the sent mail's
thumbnail and the portal show page 1 exactly as transmitted.
"""

from __future__ import annotations

import logging
from datetime import datetime

from faxbox.render import with_header
from faxbox.shared.contracts import OutboundFaxRequested
from faxbox.shared.tagline import (
    DEFAULT_HEADER_FORMAT,
    HeaderFormatError,
    check_format,
    header_fields,
    header_text,
)

log = logging.getLogger(__name__)


def stamped(
    tiff: bytes, message: OutboundFaxRequested, moment: datetime, *, first_page: int = 1
) -> bytes:
    """The document ``tiff`` from its page ``first_page`` on, with the faxbox's header
    line above each page as of ``moment``.

    A redial after some pages were confirmed sends only the pages after them (as
    HylaFAX does); ``page x/y`` still counts in the whole document.
    """
    fmt = message.settings.header_format or DEFAULT_HEADER_FORMAT
    try:
        check_format(fmt)
    except HeaderFormatError as exc:
        # Checked when the faxbox was saved; a format from elsewhere must not stop the fax.
        log.warning("header format %r refused (%s); using the default one", fmt, exc)
        fmt = DEFAULT_HEADER_FORMAT
    fields = header_fields(message.settings, message.destination, message.fax_id, moment)
    return with_header(
        tiff,
        lambda page, pages: header_text(fmt, fields, page, pages),
        skip_pages=first_page - 1,
        pages_total=message.pages,
    )
