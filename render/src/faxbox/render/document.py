"""Document (PDF or TIFF) to a fax-ready multi-page Group 4 TIFF.

Every page comes out 1728 pixels wide, the T.4 scan line (215 mm at 204 dpi), at
204 x 196 dpi ("fine") or 204 x 98 ("standard"), landscape pages turned to portrait.
A page is fitted to that line keeping its aspect ratio but never enlarged beyond its
true size (``fit_page``): one wider than the line at true scale (US Letter, 8.5 in =
1734 pixels; Legal; A3) is scaled down to fill it, one narrower (A4 portrait, 1686
pixels; A5; a label) is drawn at true size. So A4 is 2292 rows at fine, 297 mm as on
A4 paper, where filling the line would enlarge it 2.4 % to 2349 rows (305 mm), which an
A4 receiver must shrink or split across two sheets; Ghostscript's fax devices and
HylaFAX send A4 at true scale too. A narrower page is centred on the white line, not
left-aligned as Ghostscript's devices leave it (their AdjustWidth widens the line on
the right): a receiver printing the 215 mm line on 210 mm paper typically loses
~2.5 mm at each side, so a centred A4 page keeps both of its own margins. TIFF frames
are drawn at their true size (pixels / their resolution) by the same rule; a frame
without a resolution has no true size and fills the line, as a 1728-pixel fax frame
does anyway.

Speed matters, because this runs for every page of every outgoing fax: PDF pages are
rendered by PDFium straight into an 8-bit grey buffer at the fax's unequal horizontal
and vertical resolutions (one matrix, no resampling), without anti-aliasing so that
hairlines and small text stay solid when thresholded; the grey page becomes bits in
numpy (see ``bilevel``) and libtiff encodes Group 4 (see ``g4tiff``). Encoding runs on a
second thread while PDFium renders the next page: both release the GIL, so a document
uses two cores within one process.

``render`` does all of this in the calling process; ``faxbox.render.sandbox`` runs it in
a child process that is killed when it takes too long.
"""

from __future__ import annotations

import ctypes
import io
import math
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from faxbox.render.bilevel import Conversion, GreyPage, choose, to_bits
from faxbox.render.errors import (
    RefusalCode,
    RenderRefused,
    empty,
    page_too_large,
    too_many_pages,
    unreadable,
)
from faxbox.render.g4tiff import FAX_WIDTH, G4TiffWriter

X_DPI: Final = 204
DEFAULT_MAX_PAGES: Final = 100
# Longest page accepted, as height / width once portrait: 5 is a 8.5 x 42 inch strip,
# longer than any paper a fax machine will print on. A fine page of that shape is
# ~14 M pixels, so the cap also bounds the memory a page can take.
MAX_ASPECT: Final = 5.0
# A TIFF frame is decoded whole before scaling; 1 G pixel would be 1 GB of grey.
MAX_SOURCE_PIXELS: Final = 150_000_000
# Pages smaller than this (about 1/4 inch) are damaged or not meant to be pages.
MIN_PAGE_POINTS: Final = 18.0

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
_PDFIUM = threading.Lock()
# Pages handed to the encoder thread and not yet written: bounds memory to a few pages.
_ENCODE_QUEUE: Final = 2


class Resolution(StrEnum):
    FINE = "fine"
    STANDARD = "standard"

    @property
    def y_dpi(self) -> int:
        return 196 if self is Resolution.FINE else 98


class DocumentKind(StrEnum):
    PDF = "pdf"
    TIFF = "tiff"


@dataclass(frozen=True, slots=True)
class RenderedPage:
    number: int  # 1-based
    rows: int
    conversion: Conversion  # what was used: THRESHOLD or HALFTONE
    rotated: bool  # a landscape page turned to portrait


@dataclass(frozen=True, slots=True)
class RenderedDocument:
    tiff: bytes
    resolution: Resolution
    pages: tuple[RenderedPage, ...]

    @property
    def page_count(self) -> int:
        return len(self.pages)


@dataclass(frozen=True, slots=True)
class _Geometry:
    rows: int
    columns: int  # the page's width on the fax line, at most FAX_WIDTH
    left: int  # white columns left of the page: a narrower page is centred
    rotated: bool
    # Portrait size in points (PDF) or inches (TIFF): what becomes columns x rows.
    width: float
    height: float


# --- detection and inspection ------------------------------------------------------------


def detect_kind(data: bytes) -> DocumentKind:
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return DocumentKind.TIFF
    # The PDF header may follow up to 1 KB of junk; readers accept that, so do we.
    if b"%PDF-" in data[:1024]:
        return DocumentKind.PDF
    raise RenderRefused(
        RefusalCode.UNSUPPORTED_DOCUMENT,
        "The attachment is not a PDF or TIFF file. Only PDF and TIFF documents can be faxed.",
    )


def inspect_document(data: bytes) -> tuple[DocumentKind, int]:
    """Kind and page count, without rendering anything; raises ``RenderRefused``."""
    kind = detect_kind(data)
    if kind is DocumentKind.PDF:
        with _PDFIUM, _open_pdf(data) as pdf:
            return kind, len(pdf)
    with _open_tiff(data) as image:
        return kind, _frame_count(image)


class _OpenPdf:
    def __init__(self, data: bytes) -> None:
        # PDFium rebuilds a damaged cross-reference table by scanning the file, so a cut
        # off PDF would open and silently lose its last pages; the end-of-file marker
        # (within the last 1 KB, or further when a mail gateway appended junk) is the
        # only sign that the file is whole.
        if b"%%EOF" not in data[-4096:]:
            raise unreadable("PDF")
        try:
            self.pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
                raise RenderRefused(
                    RefusalCode.ENCRYPTED_PDF,
                    "The PDF is protected with a password, so it cannot be opened for "
                    "faxing. Please send a copy without password protection.",
                ) from exc
            raise unreadable("PDF") from exc

    def __enter__(self) -> pdfium.PdfDocument:
        return self.pdf

    def __exit__(self, *exc_info: object) -> None:
        self.pdf.close()


def _open_pdf(data: bytes) -> _OpenPdf:
    return _OpenPdf(data)


class _OpenTiff:
    def __init__(self, data: bytes) -> None:
        try:
            self.image = Image.open(io.BytesIO(data), formats=["TIFF"])
        except Image.DecompressionBombError as exc:
            raise page_too_large(None) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise unreadable("TIFF image") from exc

    def __enter__(self) -> Image.Image:
        return self.image

    def __exit__(self, *exc_info: object) -> None:
        self.image.close()


def _open_tiff(data: bytes) -> _OpenTiff:
    return _OpenTiff(data)


def _frame_count(image: Image.Image) -> int:
    try:
        return int(getattr(image, "n_frames", 1))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise unreadable("TIFF image") from exc


# --- geometry ------------------------------------------------------------------------------


def fit_page(width: float, height: float, y_dpi: int, *, per_inch: float | None) -> tuple[int, int]:
    """(columns, rows) of a portrait ``width`` x ``height`` page on the fax page: fitted to
    the FAX_WIDTH-pixel line keeping its aspect ratio, never enlarged beyond true size.

    ``per_inch`` is the units of ``width`` and ``height`` in an inch (72: points, 1:
    inches); None when the true size is unknown, and then the page fills the line.
    """
    scale = FAX_WIDTH / width  # pixels across per unit
    if per_inch is not None:
        scale = min(scale, X_DPI / per_inch)
    columns = min(FAX_WIDTH, max(1, round(width * scale)))
    rows = max(1, round(height * scale * (y_dpi / X_DPI)))
    return columns, rows


def _geometry(
    width: float,
    height: float,
    y_dpi: int,
    page: int,
    minimum: float,
    per_inch: float | None,
) -> _Geometry:
    if not (math.isfinite(width) and math.isfinite(height)):
        raise unreadable()
    if width < minimum or height < minimum:
        raise page_too_large(page)
    rotated = width > height
    if rotated:
        width, height = height, width
    if height / width > MAX_ASPECT:
        raise page_too_large(page)
    columns, rows = fit_page(width, height, y_dpi, per_inch=per_inch)
    return _Geometry(rows, columns, (FAX_WIDTH - columns) // 2, rotated, width, height)


# --- the pipeline --------------------------------------------------------------------------


class _Encoder:
    """Turns grey pages into bits and G4 on one background thread, in order."""

    def __init__(self, page_count: int, resolution: Resolution, conversion: Conversion) -> None:
        self._writer = G4TiffWriter(page_count)
        self._resolution = resolution
        self._conversion = conversion
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fax-encode")
        self._pending: list[Future[RenderedPage]] = []
        self.pages: list[RenderedPage] = []
        self._scratch: npt.NDArray[np.bool_] | None = None

    def _encode(
        self, grey: GreyPage, number: int, geometry: _Geometry, conversion: Conversion
    ) -> RenderedPage:
        if self._scratch is None or self._scratch.size < grey.size:
            self._scratch = np.empty(grey.size, dtype=np.bool_)
        # Photo or text is judged on the page itself, not on the white margins a page
        # narrower than the line is centred between (a view: nothing is copied).
        conversion = choose(grey[:, geometry.left : geometry.left + geometry.columns], conversion)
        bits, used = to_bits(grey, conversion, X_DPI, self._resolution.y_dpi, self._scratch)
        self._writer.add_page(bits, X_DPI, self._resolution.y_dpi)
        return RenderedPage(number, grey.shape[0], used, geometry.rotated)

    def submit(
        self,
        grey: GreyPage,
        number: int,
        geometry: _Geometry,
        conversion: Conversion | None = None,
    ) -> None:
        while len(self._pending) >= _ENCODE_QUEUE:
            self.pages.append(self._pending.pop(0).result())
        self._pending.append(
            self._pool.submit(self._encode, grey, number, geometry, conversion or self._conversion)
        )

    def finish(self) -> list[RenderedPage]:
        try:
            for future in self._pending:
                self.pages.append(future.result())
            self._pending.clear()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._writer.close()
        return self.pages

    @property
    def tiff(self) -> bytes:
        return self._writer.getvalue()

    def abandon(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.close()


def _pdf_page_sizes(pdf: pdfium.PdfDocument) -> Iterator[tuple[float, float]]:
    size = pdfium_c.FS_SIZEF()
    for index in range(len(pdf)):
        # Reads the page dictionary only, with /Rotate applied: no page content is parsed.
        if not pdfium_c.FPDF_GetPageSizeByIndexF(pdf.raw, index, ctypes.byref(size)):
            raise unreadable("PDF")
        yield float(size.width), float(size.height)


class _PageBuffers:
    """Grey page buffers reused round-robin: a fresh 4 MB array per page costs more in
    page faults than filling a warm one. One more than the encoder can hold, plus the
    page being rendered, so a buffer is never overwritten while still being encoded."""

    def __init__(self, rows: int) -> None:
        self._buffers = [
            np.empty(rows * FAX_WIDTH, dtype=np.uint8) for _ in range(_ENCODE_QUEUE + 2)
        ]
        self._next = 0

    def take(self, rows: int) -> GreyPage:
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        if buffer.size < rows * FAX_WIDTH:
            buffer = np.empty(rows * FAX_WIDTH, dtype=np.uint8)
            self._buffers[self._next - 1] = buffer
        grey = buffer[: rows * FAX_WIDTH].reshape(rows, FAX_WIDTH)
        grey.fill(255)
        return grey


def _render_pdf_page(page: pdfium.PdfPage, geometry: _Geometry, grey: GreyPage) -> GreyPage:
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


def _render_pdf(
    data: bytes, resolution: Resolution, max_pages: int, conversion: Conversion
) -> RenderedDocument:
    with _PDFIUM, _open_pdf(data) as pdf:
        count = len(pdf)
        if count == 0:
            raise empty()
        if count > max_pages:
            raise too_many_pages(count, max_pages)
        # Every page's size is checked before the first is rendered: a refusal costs
        # nothing, and never comes after minutes of work.
        geometries = [
            _geometry(w, h, resolution.y_dpi, number, MIN_PAGE_POINTS, per_inch=72.0)
            for number, (w, h) in enumerate(_pdf_page_sizes(pdf), start=1)
        ]
        encoder = _Encoder(count, resolution, conversion)
        buffers = _PageBuffers(max(g.rows for g in geometries))
        try:
            for index, geometry in enumerate(geometries):
                try:
                    page = pdf[index]
                except pdfium.PdfiumError as exc:
                    raise unreadable("PDF") from exc
                try:
                    grey = _render_pdf_page(page, geometry, buffers.take(geometry.rows))
                finally:
                    page.close()
                encoder.submit(grey, index + 1, geometry)
            pages = encoder.finish()
        except BaseException:
            encoder.abandon()
            raise
    return RenderedDocument(encoder.tiff, resolution, tuple(pages))


def _frame_dpi(frame: Image.Image) -> tuple[float, float, bool]:
    """The frame's resolution, and whether the frame states it (so has a true size).

    Without one, a 1728-pixel-wide frame is taken as a fax page: fine, or standard when
    it is too short for a fine page (a standard A4 or Letter page has ~1100 rows, a fine
    one ~2200); anything else as a 200 dpi scan, for its shape only: it fills the line.
    """
    dpi = frame.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        try:
            x, y = float(dpi[0]), float(dpi[1])
        except (TypeError, ValueError):
            x = y = 0.0
        if 20.0 <= x <= 10_000.0 and 20.0 <= y <= 10_000.0:
            return x, y, True
    if frame.width == FAX_WIDTH:
        return float(X_DPI), 98.0 if frame.height <= 1400 else 196.0, False
    return 200.0, 200.0, False


def _frame_to_grey(frame: Image.Image) -> tuple[Image.Image, bool]:
    """The frame in mode "L", and whether it was black and white to begin with."""
    if frame.mode == "1":
        return frame.convert("L"), True
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L"), False
    if frame.mode.startswith("I;16") or frame.mode in ("I", "F"):
        # Scale 16-bit and float samples by their actual range, not by clipping at 255.
        values = np.asarray(frame, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0 + 255
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L"), False
    return frame.convert("L"), False


def _tiff_frame_grey(
    image: Image.Image, index: int, resolution: Resolution
) -> tuple[GreyPage, _Geometry, bool]:
    """Frame ``index`` scaled to the fax page: (grey, its geometry, was black and white)."""
    try:
        image.seek(index)
    except (OSError, ValueError, EOFError) as exc:
        raise unreadable("TIFF image") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise unreadable("TIFF image")
    if width * height > MAX_SOURCE_PIXELS:
        raise page_too_large(index + 1)
    x_dpi, y_dpi, known = _frame_dpi(image)
    geometry = _geometry(
        width / x_dpi,
        height / y_dpi,
        resolution.y_dpi,
        index + 1,
        0.25,
        per_inch=1.0 if known else None,
    )
    try:
        image.load()
        grey, bilevel = _frame_to_grey(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise unreadable("TIFF image") from exc
    if geometry.rotated:
        # A quarter turn clockwise, as for PDF pages.
        grey = grey.transpose(Image.Transpose.ROTATE_270)
    target = (geometry.columns, geometry.rows)
    if grey.size != target:
        grey = grey.resize(target, Image.Resampling.BILINEAR, reducing_gap=None)
    if geometry.columns == FAX_WIDTH:
        return np.asarray(grey, dtype=np.uint8), geometry, bilevel
    # Narrower than the line at true size: centred on a white line. Pillow cannot scale
    # into part of a larger image, so this costs one copy of the (narrower) page.
    page = np.full((geometry.rows, FAX_WIDTH), 255, dtype=np.uint8)
    page[:, geometry.left : geometry.left + geometry.columns] = np.asarray(grey, dtype=np.uint8)
    return page, geometry, bilevel


def _render_tiff(
    data: bytes, resolution: Resolution, max_pages: int, conversion: Conversion
) -> RenderedDocument:
    with _open_tiff(data) as image:
        count = _frame_count(image)
        if count == 0:
            raise empty()
        if count > max_pages:
            raise too_many_pages(count, max_pages)
        encoder = _Encoder(count, resolution, conversion)
        try:
            for index in range(count):
                grey, geometry, bilevel = _tiff_frame_grey(image, index, resolution)
                # A black-and-white source (a fax, a scan) screened again would turn its
                # own dither into moire; its scaled edges only need a threshold.
                forced = Conversion.THRESHOLD if bilevel else None
                encoder.submit(grey, index + 1, geometry, forced)
            pages = encoder.finish()
        except BaseException:
            encoder.abandon()
            raise
    return RenderedDocument(encoder.tiff, resolution, tuple(pages))


def render(
    data: bytes,
    kind: DocumentKind | str | None = None,
    resolution: Resolution | str = Resolution.FINE,
    max_pages: int = DEFAULT_MAX_PAGES,
    conversion: Conversion | str = Conversion.AUTO,
) -> RenderedDocument:
    """Render in this process, with no time limit; raises ``RenderRefused``."""
    # The declared kind is checked but the bytes decide: mail clients often get it wrong.
    if kind is not None:
        DocumentKind(kind)
    found = detect_kind(data)
    resolution = Resolution(resolution)
    conversion = Conversion(conversion)
    if found is DocumentKind.PDF:
        return _render_pdf(data, resolution, max_pages, conversion)
    return _render_tiff(data, resolution, max_pages, conversion)
