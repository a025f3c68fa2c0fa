"""PDF pages to grey fax pages, drawn by PDFium.

Pages are rendered straight into an 8-bit grey buffer at the fax's unequal horizontal
and vertical resolutions (one matrix, no resampling), paths and images without
anti-aliasing so that hairlines stay solid when thresholded.

A PDF is refused as incomplete only when it really is: PDFium rebuilds a damaged
cross-reference table by scanning the file, so a cut-off PDF would open and silently
lose its last pages, and the end-of-file marker is the sign that the file is whole.
Whatever follows the last marker (NUL padding from a download tool, a mail gateway's
footer) is ignored unless it holds PDF objects, which means the marker belonged to an
earlier part of the file (a linearized first page, an earlier revision) and the rest
was cut off. A file that ends in its trailer dictionary with no marker is whole too.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator
from typing import Final

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from faxbox.render.bilevel import Conversion, GreyPage
from faxbox.render.encoder import Encoder, PageBuffers
from faxbox.render.errors import (
    empty,
    encrypted_pdf,
    too_many_pages,
    truncated_pdf,
    unreadable,
)
from faxbox.render.g4tiff import FAX_WIDTH
from faxbox.render.geometry import Geometry, Size, place
from faxbox.render.model import RenderedDocument, Resolution

POINTS_PER_INCH: Final = 72.0
_END_MARKER: Final = b"%%EOF"
# "12 0 obj": an object's header; never in padding or a gateway's footer.
_OBJECT_HEADER: Final = re.compile(rb"\d+\s+\d+\s+obj\b")
_PADDING: Final = b"\x00 \t\r\n\f"

# Text is drawn anti-aliased and thresholded at half coverage (bilevel.THRESHOLD): on
# the benchmark's text pages that takes 5 % fewer G4 bytes than PDFium's aliased glyphs
# (1.053 MB against 1.107 MB for 19 pages), whose unhinted outlines leave ragged
# edges. Paths and images stay aliased: rules keep their exact width, and grey fills
# and photos keep their own tones for the threshold-or-halftone choice.
_RENDER_FLAGS: Final = (
    pdfium_c.FPDF_ANNOT
    | pdfium_c.FPDF_PRINTING
    | pdfium_c.FPDF_GRAYSCALE
    | pdfium_c.FPDF_RENDER_NO_SMOOTHIMAGE
    | pdfium_c.FPDF_RENDER_NO_SMOOTHPATH
)
# PDFium is not thread-safe: one document at a time per process. Workers started by
# ``render_document`` each have their own PDFium, so they run in parallel.
PDFIUM = threading.Lock()


def check_whole(data: bytes) -> None:
    """Raise ``RenderRefused`` when the PDF was cut off (see the module's docstring)."""
    end = data.rfind(_END_MARKER)
    if end >= 0:
        if _OBJECT_HEADER.search(data, end + len(_END_MARKER)) is None:
            return
        raise truncated_pdf()
    tail = data[-4096:].rstrip(_PADDING)
    last_object = tail.rfind(b"endobj")
    if tail.endswith(b">>") and tail.find(b"trailer", last_object + 1) >= 0:
        return
    raise truncated_pdf()


class OpenPdf:
    def __init__(self, data: bytes) -> None:
        try:
            self.pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
                raise encrypted_pdf() from exc
            raise unreadable("PDF") from exc
        # Only a file PDFium can open is called incomplete: one it cannot is damaged.
        try:
            check_whole(data)
        except BaseException:
            self.pdf.close()
            raise

    def __enter__(self) -> pdfium.PdfDocument:
        return self.pdf

    def __exit__(self, *exc_info: object) -> None:
        self.pdf.close()


def page_count(data: bytes) -> int:
    with PDFIUM, OpenPdf(data) as pdf:
        return len(pdf)


def _page_sizes(pdf: pdfium.PdfDocument) -> Iterator[Size]:
    size = pdfium_c.FS_SIZEF()
    for index in range(len(pdf)):
        # Reads the page dictionary only, with /Rotate applied: no page content is parsed.
        if not pdfium_c.FPDF_GetPageSizeByIndexF(pdf.raw, index, ctypes.byref(size)):
            raise unreadable("PDF", index + 1)
        yield Size(float(size.width), float(size.height), POINTS_PER_INCH)


def _render_page(page: pdfium.PdfPage, geometry: Geometry, grey: GreyPage) -> GreyPage:
    rows = geometry.rows
    bitmap = pdfium_c.FPDFBitmap_CreateEx(
        FAX_WIDTH, rows, pdfium_c.FPDFBitmap_Gray, ctypes.c_void_p(grey.ctypes.data), FAX_WIDTH
    )
    if not bitmap:
        raise MemoryError("PDFium could not set up a page bitmap")
    try:
        left, right = geometry.left, geometry.left + geometry.columns
        sx = geometry.columns / geometry.width
        sy = rows / geometry.height
        # PDFium first maps the page (its /Rotate applied) onto a canvas of its size in
        # points, y downwards; this matrix then scales that canvas to the fax's unequal
        # resolutions and moves it right to centre it on the line (drawing it there
        # costs nothing), turning a landscape canvas a quarter turn clockwise. Nothing
        # is drawn outside the page's own columns: the margins stay white.
        if geometry.rotated:
            matrix = pdfium_c.FS_MATRIX(0.0, sy, -sx, 0.0, float(right), 0.0)
        else:
            matrix = pdfium_c.FS_MATRIX(sx, 0.0, 0.0, sy, float(left), 0.0)
        clip = pdfium_c.FS_RECTF(float(left), 0.0, float(right), float(rows))
        pdfium_c.FPDF_RenderPageBitmapWithMatrix(
            bitmap, page.raw, ctypes.byref(matrix), ctypes.byref(clip), _RENDER_FLAGS
        )
    finally:
        pdfium_c.FPDFBitmap_Destroy(bitmap)
    return grey


def render_pdf(
    data: bytes,
    resolution: Resolution,
    max_pages: int,
    conversion: Conversion,
    max_length_mm: float,
) -> RenderedDocument:
    with PDFIUM, OpenPdf(data) as pdf:
        count = len(pdf)
        if count == 0:
            raise empty()
        if count > max_pages:
            raise too_many_pages(count, max_pages)
        # Every page's size is checked before the first is rendered: a refusal costs
        # nothing, and never comes after minutes of work.
        geometries = [
            place(size, resolution.y_dpi, number, max_length_mm)
            for number, size in enumerate(_page_sizes(pdf), start=1)
        ]
        encoder = Encoder(count, resolution, conversion)
        buffers = PageBuffers(max(g.rows for g in geometries))
        try:
            for index, geometry in enumerate(geometries):
                try:
                    page = pdf[index]
                except pdfium.PdfiumError as exc:
                    raise unreadable("PDF", index + 1) from exc
                try:
                    grey = _render_page(page, geometry, buffers.take(geometry.rows))
                finally:
                    page.close()
                encoder.submit(grey, index + 1, geometry)
            pages = encoder.finish()
        except BaseException:
            encoder.abandon()
            raise
    return RenderedDocument(encoder.tiff, resolution, tuple(pages))
