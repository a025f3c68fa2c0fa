"""TIFF frames to grey fax pages, read by Pillow.

Each page frame is turned upright by its ``Orientation`` tag (all eight: mirrored and
turned scans, as cameras and some fax software write them), placed by its true size
when it states a resolution (see ``geometry``), converted to grey from whatever mode it
loads in, and scaled to its place on the line. Reduced-resolution copies of a page
(``NewSubfileType`` bit 0: thumbnails and overviews) are not pages and are skipped.
Classic TIFF and BigTIFF are both read.

Grey, colour, 16-bit, float, CMYK, Lab and paletted frames go through the same
threshold-or-halftone choice as PDF pages; a frame that is black and white already (a
fax, a bilevel scan) is only thresholded after scaling, since screening it again would
turn its own dither into moire.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, TiffImagePlugin

from faxbox.render.bilevel import Conversion, GreyPage
from faxbox.render.encoder import Encoder
from faxbox.render.errors import (
    empty,
    too_many_pages,
    too_many_pixels,
    unreadable,
    unsupported_tiff,
)
from faxbox.render.g4tiff import FAX_WIDTH
from faxbox.render.geometry import MAX_SOURCE_PIXELS, X_DPI, Geometry, Size, place
from faxbox.render.model import RenderedDocument, Resolution

MAGIC: Final = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic, BigTIFF

_NEW_SUBFILE_TYPE: Final = 254
_REDUCED_IMAGE: Final = 1
_IMAGE_WIDTH: Final = 256
_IMAGE_LENGTH: Final = 257
_COMPRESSION: Final = 259
_ORIENTATION: Final = 274
# Orientation tag -> the transpose that brings row 0 to the top and column 0 to the left.
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Compressions Pillow decodes; a frame in another that fails to load is not damaged,
# just stored in a way this renderer cannot read, and the sender is told which.
_READABLE_COMPRESSIONS: Final = frozenset({1, 2, 3, 4, 5, 7, 8, 32773, 32946})
_COMPRESSION_NAMES: Final = {
    6: "old-style JPEG compression",
    34661: "JBIG compression",
    34712: "JPEG 2000 compression",
    34887: "LERC compression",
    34925: "LZMA compression",
    50000: "Zstandard compression",
    50001: "WebP compression",
    50002: "JPEG XL compression",
}
# What Pillow says of a TIFF it parses but has no pixel mode or layout for.
_UNSUPPORTED_LAYOUTS: Final = ("unknown pixel mode", "unknown data organization")
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError)


class OpenTiff:
    def __init__(self, data: bytes) -> None:
        # TiffImageFile itself, not Image.open: its errors keep their reason (Image.open
        # reduces every one to "cannot identify"), and pixel counts are checked per frame
        # below instead of by Pillow's decompression-bomb guard on the first frame only.
        try:
            self.image = TiffImagePlugin.TiffImageFile(io.BytesIO(data))
        except SyntaxError as exc:
            if str(exc) in _UNSUPPORTED_LAYOUTS:
                raise unsupported_tiff(
                    "a pixel format, sample size or layout that is not supported"
                ) from exc
            raise unreadable("TIFF image") from exc
        except _DECODE_ERRORS as exc:
            raise unreadable("TIFF image") from exc

    def __enter__(self) -> Image.Image:
        return self.image

    def __exit__(self, *exc_info: object) -> None:
        self.image.close()


def _seek(image: Image.Image, index: int) -> None:
    try:
        image.seek(index)
    except _DECODE_ERRORS as exc:
        raise unreadable("TIFF image") from exc


def page_frames(image: Image.Image) -> list[int]:
    """Indexes of the frames that are pages: every frame but reduced-resolution copies
    (all of them, if a file holds nothing else)."""
    try:
        count = int(getattr(image, "n_frames", 1))
    except _DECODE_ERRORS as exc:
        raise unreadable("TIFF image") from exc
    pages: list[int] = []
    for index in range(count):
        _seek(image, index)
        subfile = _tag(image, _NEW_SUBFILE_TYPE, 0)
        if not subfile & _REDUCED_IMAGE:
            pages.append(index)
    return pages or list(range(count))


def page_count(data: bytes) -> int:
    with OpenTiff(data) as image:
        return len(page_frames(image))


def _tag(image: Image.Image, tag: int, default: int) -> int:
    value = getattr(image, "tag_v2", {}).get(tag, default)
    if isinstance(value, tuple):
        value = value[0] if value else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _stated_dpi(frame: Image.Image) -> tuple[float, float] | None:
    dpi = frame.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        try:
            x, y = float(dpi[0]), float(dpi[1])
        except (TypeError, ValueError):
            return None
        # 1 dpi is what writers put for "no unit"; beyond 10,000 is no real resolution.
        if 20.0 <= x <= 10_000.0 and 20.0 <= y <= 10_000.0:
            return x, y
    return None


@dataclass(frozen=True, slots=True)
class _Frame:
    size: Size
    orientation: int  # as stored; the pixels are turned upright when loaded


def _frame(image: Image.Image, page: int) -> _Frame:
    """The current frame's upright size, checked for pixel count."""
    # The stored size, from the tags: Pillow reports some frames already turned upright.
    width = _tag(image, _IMAGE_WIDTH, image.size[0])
    height = _tag(image, _IMAGE_LENGTH, image.size[1])
    if width < 1 or height < 1:
        raise unreadable("TIFF image", page)
    if width * height > MAX_SOURCE_PIXELS:
        raise too_many_pixels(page, width * height, MAX_SOURCE_PIXELS)
    orientation = _tag(image, _ORIENTATION, 1)
    if orientation not in _UPRIGHT:
        orientation = 1
    dpi = _stated_dpi(image)
    if orientation >= 5:  # stored a quarter turned: rows become columns
        width, height = height, width
        dpi = None if dpi is None else (dpi[1], dpi[0])
    if dpi is not None:
        return _Frame(Size(width / dpi[0], height / dpi[1], 1.0), orientation)
    if width == FAX_WIDTH:
        # A fax page without resolution tags: fine, or standard when too short for a
        # fine page (a standard A4 or Letter page has ~1100 rows, a fine one ~2200).
        y_dpi = 98.0 if height <= 1400 else 196.0
        return _Frame(Size(width, height * X_DPI / y_dpi, None), orientation)
    return _Frame(Size(width, height, None), orientation)


def _stretch(frame: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float samples to 8 bits by their actual range: their white
    point is anything from 1.0 to 65535, and scientific images use only part of it."""
    values = np.nan_to_num(np.asarray(frame, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:  # one tone only: nothing to print
        return Image.new("L", frame.size, 255)
    scaled = (values - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def _to_grey(frame: Image.Image) -> tuple[Image.Image, bool]:
    """The frame in mode "L", and whether it was black and white to begin with."""
    mode = frame.mode
    if mode == "1":
        return frame.convert("L"), True
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L"), False
    if mode == "LAB":
        return frame.getchannel("L"), False  # L* is lightness, 0-255
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _stretch(frame), False
    try:
        return frame.convert("L"), False
    except ValueError:
        return frame.convert("RGB").convert("L"), False


def _load(image: Image.Image, page: int) -> None:
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        compression = _tag(image, _COMPRESSION, 1)
        if compression not in _READABLE_COMPRESSIONS:
            name = _COMPRESSION_NAMES.get(compression, f"compression type {compression}")
            raise unsupported_tiff(name, page) from exc
        raise unreadable("TIFF image", page) from exc


def _page_grey(
    image: Image.Image, frame: _Frame, geometry: Geometry, page: int
) -> tuple[GreyPage, bool]:
    """The current frame drawn on its fax page: (grey page, was black and white)."""
    _load(image, page)
    try:
        grey, bilevel = _to_grey(image)
    except _DECODE_ERRORS as exc:
        raise unreadable("TIFF image", page) from exc
    # Pillow 13 turns a frame upright as it loads it, and then drops the tag; older
    # versions leave both to us.
    orientation = _tag(image, _ORIENTATION, 1)
    if orientation in _UPRIGHT:
        grey = grey.transpose(_UPRIGHT[orientation])
    if geometry.rotated:
        # A quarter turn clockwise, as for PDF pages.
        grey = grey.transpose(Image.Transpose.ROTATE_270)
    target = (geometry.columns, geometry.rows)
    if grey.size != target:
        grey = grey.resize(target, Image.Resampling.BILINEAR, reducing_gap=None)
    if geometry.columns == FAX_WIDTH:
        return np.asarray(grey, dtype=np.uint8), bilevel
    # Narrower than the line: centred on a white line. Pillow cannot scale into part of
    # a larger image, so this costs one copy of the (narrower) page.
    out = np.full((geometry.rows, FAX_WIDTH), 255, dtype=np.uint8)
    out[:, geometry.left : geometry.left + geometry.columns] = np.asarray(grey, dtype=np.uint8)
    return out, bilevel


def render_tiff(
    data: bytes,
    resolution: Resolution,
    max_pages: int,
    conversion: Conversion,
    max_length_mm: float,
) -> RenderedDocument:
    with OpenTiff(data) as image:
        indexes = page_frames(image)
        count = len(indexes)
        if count == 0:
            raise empty()
        if count > max_pages:
            raise too_many_pages(count, max_pages)
        # Every page's size is checked before the first is decoded, as for PDF.
        frames: list[tuple[_Frame, Geometry]] = []
        for number, index in enumerate(indexes, start=1):
            _seek(image, index)
            frame = _frame(image, number)
            frames.append((frame, place(frame.size, resolution.y_dpi, number, max_length_mm)))
        encoder = Encoder(count, resolution, conversion)
        try:
            for number, (index, (frame, geometry)) in enumerate(
                zip(indexes, frames, strict=True), start=1
            ):
                _seek(image, index)
                grey, bilevel = _page_grey(image, frame, geometry, number)
                forced = Conversion.THRESHOLD if bilevel else None
                encoder.submit(grey, number, geometry, forced)
            pages = encoder.finish()
        except BaseException:
            encoder.abandon()
            raise
    return RenderedDocument(encoder.tiff, resolution, tuple(pages))
