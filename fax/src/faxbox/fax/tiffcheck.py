"""Pre-flight check of a TIFF before a fax call is placed.

spandsp 0.0.6 reports a bad document only once the call is up (code 41 after dialling
and handshaking) or, worse, sends it wrongly without complaint: no resolution tags
means "standard resolution", any width other than 1728 fails against most machines. So
every page is checked here first, with a reason a person can act on.

The reader is a small IFD walker on ``struct``: it reads tags exactly as written, in
either byte order, across every page, without decoding any image data and without the
defaults an imaging library silently fills in (Pillow reports BitsPerSample=1 for a file
that has no such tag, which spandsp then refuses).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

FAX_WIDTH = 1728
MAX_PAGES = 1000
MAX_TAGS_PER_PAGE = 1000
CM_PER_INCH = 2.54

# TIFF tags used here (TIFF 6.0).
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
STRIP_OFFSETS = 273
SAMPLES_PER_PIXEL = 277
STRIP_BYTE_COUNTS = 279
X_RESOLUTION = 282
Y_RESOLUTION = 283
RESOLUTION_UNIT = 296
TILE_WIDTH = 322
TILE_OFFSETS = 324

_WANTED = frozenset(
    {
        IMAGE_WIDTH,
        IMAGE_LENGTH,
        BITS_PER_SAMPLE,
        COMPRESSION,
        PHOTOMETRIC,
        STRIP_OFFSETS,
        SAMPLES_PER_PIXEL,
        STRIP_BYTE_COUNTS,
        X_RESOLUTION,
        Y_RESOLUTION,
        RESOLUTION_UNIT,
        TILE_WIDTH,
        TILE_OFFSETS,
    }
)

COMPRESSION_NONE = 1
COMPRESSION_CCITT_T4 = 3  # "Group 3"
COMPRESSION_CCITT_T6 = 4  # "Group 4"
_COMPRESSION_NAMES = {
    1: "uncompressed",
    2: "CCITT modified Huffman",
    3: "Group 3",
    4: "Group 4",
    5: "LZW",
    6: "old-style JPEG",
    7: "JPEG",
    8: "Deflate",
    32773: "PackBits",
    32946: "Deflate",
    34712: "JPEG 2000",
}
_ALLOWED_COMPRESSIONS = frozenset({COMPRESSION_NONE, COMPRESSION_CCITT_T4, COMPRESSION_CCITT_T6})

# field type -> (struct code, size); ASCII(2) and UNDEFINED(7) are never needed.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1),
    3: ("H", 2),
    4: ("I", 4),
    5: ("II", 8),
    6: ("b", 1),
    8: ("h", 2),
    9: ("i", 4),
    10: ("ii", 8),
    11: ("f", 4),
    12: ("d", 8),
    13: ("I", 4),
}
_TYPE_SIZES = {**{t: size for t, (_, size) in _TYPES.items()}, 2: 1, 7: 1}


class TiffReason(StrEnum):
    UNREADABLE = "unreadable"
    NOT_TIFF = "not_tiff"
    DAMAGED = "damaged"
    NO_PAGES = "no_pages"
    TOO_MANY_PAGES = "too_many_pages"
    TILED = "tiled"
    BITS_PER_SAMPLE_MISSING = "bits_per_sample_missing"
    NOT_BLACK_AND_WHITE = "not_black_and_white"
    SAMPLES_PER_PIXEL = "samples_per_pixel"
    PHOTOMETRIC = "photometric"
    WRONG_WIDTH = "wrong_width"
    NO_LENGTH = "no_length"
    RESOLUTION_MISSING = "resolution_missing"
    RESOLUTION_UNIT = "resolution_unit"
    RESOLUTION_INVALID = "resolution_invalid"
    COMPRESSION = "compression"
    NO_IMAGE_DATA = "no_image_data"


class TiffRejected(ValueError):
    """The document cannot be faxed as it is; ``message`` is meant for the sender."""

    def __init__(self, reason_code: TiffReason, message: str, page: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
        self.page = page

    def __repr__(self) -> str:
        return f"TiffRejected({self.reason_code.value!r}, {self.message!r}, page={self.page})"


@dataclass(frozen=True, slots=True)
class FaxPage:
    number: int  # 1-based
    width: int
    length: int
    x_dpi: float
    y_dpi: float
    resolution: str  # "standard" | "fine"
    compression: int


@dataclass(frozen=True, slots=True)
class FaxDocument:
    path: Path
    pages: tuple[FaxPage, ...]

    @property
    def page_count(self) -> int:
        return len(self.pages)


Value = int | float


class _Damaged(Exception):
    pass


class _IfdReader:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size
        head = self._read(0, 8)
        if head[:4] == b"II*\x00":
            self._end = "<"
        elif head[:4] == b"MM\x00*":
            self._end = ">"
        elif head[:2] in (b"II", b"MM"):
            # BigTIFF (43) and other variants: no fax software expects them.
            raise TiffRejected(
                TiffReason.NOT_TIFF,
                "The document is in a TIFF variant (BigTIFF) that fax software cannot read.",
            )
        else:
            raise TiffRejected(TiffReason.NOT_TIFF, "The document is not a TIFF image.")
        (self.first_ifd,) = struct.unpack(self._end + "I", head[4:8])

    def _read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise _Damaged(f"needs bytes {offset}..{offset + n} of a {self.size}-byte file")
        self._f.seek(offset)
        data = self._f.read(n)
        if len(data) != n:
            raise _Damaged("short read")
        return data

    def pages(self) -> list[dict[int, tuple[Value, ...]]]:
        pages: list[dict[int, tuple[Value, ...]]] = []
        seen: set[int] = set()
        offset = self.first_ifd
        while offset:
            if offset in seen:
                raise _Damaged("the page list loops back on itself")
            if len(pages) >= MAX_PAGES:
                raise TiffRejected(
                    TiffReason.TOO_MANY_PAGES,
                    f"The document has more than {MAX_PAGES} pages, which is too many to fax.",
                )
            seen.add(offset)
            tags, offset = self._ifd(offset)
            pages.append(tags)
        return pages

    def _ifd(self, offset: int) -> tuple[dict[int, tuple[Value, ...]], int]:
        (count,) = struct.unpack(self._end + "H", self._read(offset, 2))
        if count > MAX_TAGS_PER_PAGE:
            raise _Damaged(f"a page claims {count} tags")
        raw = self._read(offset + 2, 12 * count + 4)
        tags: dict[int, tuple[Value, ...]] = {}
        for i in range(count):
            tag, ftype, n = struct.unpack(self._end + "HHI", raw[12 * i : 12 * i + 8])
            if tag not in _WANTED:
                continue
            tags[tag] = self._values(ftype, n, raw[12 * i + 8 : 12 * i + 12])
        (next_ifd,) = struct.unpack(self._end + "I", raw[12 * count :])
        return tags, next_ifd

    def _values(self, ftype: int, n: int, inline: bytes) -> tuple[Value, ...]:
        spec = _TYPES.get(ftype)
        if spec is None:
            if ftype not in _TYPE_SIZES:
                raise _Damaged(f"unknown field type {ftype}")
            return ()
        code, size = spec
        total = size * n
        if n > (self.size // size) + 1:
            raise _Damaged(f"a tag claims {n} values")
        if total <= 4:
            data = inline[:total]
        else:
            (pointer,) = struct.unpack(self._end + "I", inline)
            data = self._read(pointer, total)
        flat = struct.unpack(f"{self._end}{code * n}", data)
        if ftype in (5, 10):
            return tuple(
                (flat[i] / flat[i + 1]) if flat[i + 1] else float("nan")
                for i in range(0, len(flat), 2)
            )
        return tuple(flat)


def _first(tags: dict[int, tuple[Value, ...]], tag: int) -> Value | None:
    values = tags.get(tag)
    return values[0] if values else None


def _near(value: float, targets: tuple[float, ...], tolerance: float = 0.015) -> bool:
    return any(abs(value - t) <= t * tolerance for t in targets)


def _check_page(number: int, tags: dict[int, tuple[Value, ...]], size: int) -> FaxPage:
    def reject(reason: TiffReason, message: str) -> TiffRejected:
        return TiffRejected(reason, f"Page {number}: {message}", number)

    if TILE_WIDTH in tags or TILE_OFFSETS in tags:
        raise reject(
            TiffReason.TILED,
            "the image is stored in tiles, which fax software cannot read. "
            "It must be stored in strips.",
        )
    bits = tags.get(BITS_PER_SAMPLE)
    if not bits:
        raise reject(
            TiffReason.BITS_PER_SAMPLE_MISSING,
            "the file does not say how many bits each pixel uses (its BitsPerSample tag is "
            "missing), so the fax software would refuse it.",
        )
    if any(b != 1 for b in bits):
        raise reject(
            TiffReason.NOT_BLACK_AND_WHITE,
            f"the image uses {int(bits[0])} bits per pixel; a fax page must be pure black "
            "and white (1 bit per pixel).",
        )
    samples = _first(tags, SAMPLES_PER_PIXEL)
    if samples is not None and samples != 1:
        raise reject(
            TiffReason.SAMPLES_PER_PIXEL,
            f"the image has {int(samples)} colour channels; a fax page must have exactly one "
            "(black and white).",
        )
    photometric = _first(tags, PHOTOMETRIC)
    if photometric is not None and photometric not in (0, 1):
        raise reject(
            TiffReason.PHOTOMETRIC,
            "the image is stored as colour or with a palette; a fax page must be plain black "
            "and white.",
        )
    width = _first(tags, IMAGE_WIDTH)
    if width != FAX_WIDTH:
        shown = "no" if width is None else str(int(width))
        raise reject(
            TiffReason.WRONG_WIDTH,
            f"the page is {shown} pixels wide; a fax page must be exactly {FAX_WIDTH} pixels "
            "wide (A4 or US Letter at 204 dots per inch).",
        )
    length = _first(tags, IMAGE_LENGTH)
    if not length or length <= 0:
        raise reject(TiffReason.NO_LENGTH, "the page has no height, so there is nothing to send.")

    x_res = _first(tags, X_RESOLUTION)
    y_res = _first(tags, Y_RESOLUTION)
    if x_res is None or y_res is None:
        missing = " and ".join(
            name for name, v in (("horizontal", x_res), ("vertical", y_res)) if v is None
        )
        raise reject(
            TiffReason.RESOLUTION_MISSING,
            f"the file does not give its {missing} resolution (dots per inch), so it would "
            "be faxed at the wrong size.",
        )
    unit = _first(tags, RESOLUTION_UNIT)
    unit = 2 if unit is None else unit  # TIFF's default unit is the inch
    if unit == 2:
        x_dpi, y_dpi = float(x_res), float(y_res)
    elif unit == 3:
        x_dpi, y_dpi = float(x_res) * CM_PER_INCH, float(y_res) * CM_PER_INCH
    else:
        raise reject(
            TiffReason.RESOLUTION_UNIT,
            "the resolution is given without a unit (inches or centimetres), so the page "
            "size cannot be known.",
        )
    # 204 dpi is what fax machines use; 200 dpi is the metric variant (8 lines/mm) that
    # T.30 treats as the same class. Vertical: standard 98/100 (3.85 l/mm), fine 196/200.
    fine = _near(y_dpi, (196.0, 200.0))
    standard = _near(y_dpi, (98.0, 100.0))
    if not _near(x_dpi, (204.0, 200.0)) or not (fine or standard):
        raise reject(
            TiffReason.RESOLUTION_INVALID,
            f"the resolution is {x_dpi:.0f} x {y_dpi:.0f} dots per inch; a fax page must be "
            "204 x 98 (standard) or 204 x 196 (fine).",
        )

    compression = _first(tags, COMPRESSION)
    compression = COMPRESSION_NONE if compression is None else int(compression)
    if compression not in _ALLOWED_COMPRESSIONS:
        name = _COMPRESSION_NAMES.get(compression, f"type {compression}")
        raise reject(
            TiffReason.COMPRESSION,
            f"the image is compressed as {name}, which fax software cannot read; it must be "
            "uncompressed, Group 3 or Group 4.",
        )

    offsets = tags.get(STRIP_OFFSETS)
    counts = tags.get(STRIP_BYTE_COUNTS)
    if not offsets:
        raise reject(TiffReason.NO_IMAGE_DATA, "the page has no image data.")
    if not counts or len(counts) != len(offsets):
        raise reject(TiffReason.DAMAGED, "the file is damaged (its image data is not indexed).")
    if any(o + c > size for o, c in zip(offsets, counts, strict=True)):
        raise reject(TiffReason.DAMAGED, "the file is cut short: part of the image is missing.")

    return FaxPage(
        number=number,
        width=int(width),
        length=int(length),
        x_dpi=x_dpi,
        y_dpi=y_dpi,
        resolution="fine" if fine else "standard",
        compression=compression,
    )


def check_tiff(path: str | os.PathLike[str]) -> FaxDocument:
    """Check every page of ``path``; raise ``TiffRejected`` for the first problem found."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise TiffRejected(
            TiffReason.UNREADABLE, f"The document could not be opened ({exc.strerror})."
        ) from exc
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise TiffRejected(TiffReason.NOT_TIFF, "The document is empty or not a TIFF.")
            reader = _IfdReader(f, size)
            raw_pages = reader.pages()
        except _Damaged as exc:
            raise TiffRejected(
                TiffReason.DAMAGED, f"The document is damaged and cannot be read ({exc})."
            ) from exc
        except OSError as exc:
            raise TiffRejected(
                TiffReason.UNREADABLE, f"The document could not be read ({exc.strerror})."
            ) from exc
    if not raw_pages:
        raise TiffRejected(TiffReason.NO_PAGES, "The document has no pages.")
    pages = tuple(_check_page(i, tags, size) for i, tags in enumerate(raw_pages, start=1))
    return FaxDocument(path=path, pages=pages)


def count_pages(path: str | os.PathLike[str]) -> int:
    """Number of pages (IFDs) in a TIFF, or 0 if it cannot be read; never raises."""
    try:
        with Path(path).open("rb") as f:
            return len(_IfdReader(f, os.fstat(f.fileno()).st_size).pages())
    except (OSError, TiffRejected, _Damaged, struct.error):
        return 0
