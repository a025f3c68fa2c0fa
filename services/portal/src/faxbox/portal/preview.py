"""Page 1 of a document as it will be transmitted: rendered as the validator renders it,
with the header line the transmitter will draw (the faxbox's format, time zone and
numbers, "page 1/N"), as a PNG for the Send page.

The document is rendered whole (in a child process with a time limit, as in the
validator), so a document that cannot be faxed is refused here already, with the
renderer's own words, and N is the real page count. Only the time in the header is the
preview's: the transmitter stamps the time of the call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faxbox import render
from faxbox.render import render_document, with_header
from faxbox.shared.store import Faxbox
from faxbox.shared.tagline import DEFAULT_HEADER_FORMAT, HeaderFields, header_text

PREVIEW_WIDTH = 860  # about half the fax line: text on the page stays readable


@dataclass(frozen=True, slots=True)
class Preview:
    png: bytes
    pages: int


def page_png(tiff: bytes, width: int = PREVIEW_WIDTH) -> bytes:
    """Page 1 of a fax TIFF as a grey PNG, as the Send page shows it."""
    return render.page_png(tiff, width)


def _first_page(tiff: bytes, box: Faxbox, fields: HeaderFields, pages: int) -> bytes:
    fmt = box.header_format or DEFAULT_HEADER_FORMAT
    headed = with_header(tiff, lambda page, total: header_text(fmt, fields, page, total))
    return page_png(headed)


async def preview(
    data: bytes,
    box: Faxbox,
    fields: HeaderFields,
    *,
    timeout_s: float,
    max_pages: int,
) -> Preview:
    """Raises ``RenderRefused`` (with the reason in the sender's words)."""
    rendered = await asyncio.to_thread(
        render_document,
        data,
        resolution=box.resolution,
        timeout_s=timeout_s,
        max_pages=max_pages,
    )
    png = await asyncio.to_thread(_first_page, rendered.tiff, box, fields, rendered.page_count)
    return Preview(png, rendered.page_count)
