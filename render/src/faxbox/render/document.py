"""Document (PDF or TIFF) to a fax-ready multi-page Group 4 TIFF.

Every page comes out 1728 pixels wide, the T.4 scan line (215 mm at 204 dpi), at
204 x 196 dpi ("fine") or 204 x 98 ("standard"); ``geometry`` says where each page goes
on it and what is refused as too long to print, ``pdf`` and ``tiff`` draw pages in grey,
``encoder`` turns grey into bits (``bilevel``: threshold or halftone per page) and
Group 4 (``g4tiff``, libtiff's own encoder).

Speed matters, because this runs for every page of every outgoing fax: PDF pages are
drawn straight at the fax's resolutions with no resampling, and encoding runs on a
second thread while the next page is drawn.

``render`` does all of this in the calling process; ``faxbox.render.sandbox`` runs it in
a child process that is killed when it takes too long.
"""

from __future__ import annotations

from faxbox.render.bilevel import Conversion
from faxbox.render.errors import not_a_document
from faxbox.render.geometry import DEFAULT_MAX_LENGTH_MM
from faxbox.render.model import DEFAULT_MAX_PAGES, DocumentKind, RenderedDocument, Resolution
from faxbox.render.pdf import page_count as pdf_page_count
from faxbox.render.pdf import render_pdf
from faxbox.render.tiff import MAGIC as TIFF_MAGIC
from faxbox.render.tiff import page_count as tiff_page_count
from faxbox.render.tiff import render_tiff


def sniff_kind(data: bytes) -> DocumentKind | None:
    """The kind the bytes say, or None."""
    if data[:4] in TIFF_MAGIC:
        return DocumentKind.TIFF
    # The PDF header may follow up to 1 KB of junk; readers accept that, so do we.
    if b"%PDF-" in data[:1024]:
        return DocumentKind.PDF
    return None


def detect_kind(data: bytes) -> DocumentKind:
    kind = sniff_kind(data)
    if kind is None:
        raise not_a_document()
    return kind


def inspect_document(data: bytes) -> tuple[DocumentKind, int]:
    """Kind and page count, without rendering anything; raises ``RenderRefused``."""
    kind = detect_kind(data)
    if kind is DocumentKind.PDF:
        return kind, pdf_page_count(data)
    return kind, tiff_page_count(data)


def render(
    data: bytes,
    kind: DocumentKind | str | None = None,
    resolution: Resolution | str = Resolution.FINE,
    max_pages: int = DEFAULT_MAX_PAGES,
    conversion: Conversion | str = Conversion.AUTO,
    max_length_mm: float = DEFAULT_MAX_LENGTH_MM,
) -> RenderedDocument:
    """Render in this process, with no time limit; raises ``RenderRefused``."""
    # The declared kind is checked but the bytes decide: mail clients often get it wrong.
    if kind is not None:
        DocumentKind(kind)
    found = detect_kind(data)
    resolution = Resolution(resolution)
    conversion = Conversion(conversion)
    if found is DocumentKind.PDF:
        return render_pdf(data, resolution, max_pages, conversion, max_length_mm)
    return render_tiff(data, resolution, max_pages, conversion, max_length_mm)
