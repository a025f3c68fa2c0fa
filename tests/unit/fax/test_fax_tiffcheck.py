"""The pre-flight TIFF check: what spandsp would refuse or mis-send is refused first."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from faxbox.fax.tiffcheck import TiffReason, TiffRejected, check_tiff, count_pages

SHORT, LONG, RATIONAL = 3, 4, 5
WIDTH, LENGTH, BPS, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
STRIP_OFFSETS, SPP, STRIP_BYTE_COUNTS = 273, 277, 279
XRES, YRES, RESUNIT, TILE_WIDTH = 282, 283, 296, 322

Tags = dict[int, tuple[int, list[int] | list[tuple[int, int]]] | None]


def fax_tags(**changes: tuple[int, list[int] | list[tuple[int, int]]] | None) -> Tags:
    """A valid fine-resolution G4 page's tags; ``changes`` by tag name replace or drop (None)."""
    tags: Tags = {
        WIDTH: (SHORT, [1728]),
        LENGTH: (SHORT, [2200]),
        BPS: (SHORT, [1]),
        COMPRESSION: (SHORT, [4]),
        PHOTOMETRIC: (SHORT, [0]),
        SPP: (SHORT, [1]),
        XRES: (RATIONAL, [(204, 1)]),
        YRES: (RATIONAL, [(196, 1)]),
        RESUNIT: (SHORT, [2]),
    }
    names = {
        "width": WIDTH,
        "bps": BPS,
        "compression": COMPRESSION,
        "photometric": PHOTOMETRIC,
        "spp": SPP,
        "xres": XRES,
        "yres": YRES,
        "unit": RESUNIT,
        "tile_width": TILE_WIDTH,
        "strip_offsets": STRIP_OFFSETS,
        "strip_byte_counts": STRIP_BYTE_COUNTS,
    }
    for name, value in changes.items():
        tags[names[name]] = value
    return tags


def build_tiff(
    pages: list[Tags], order: str = "<", loop: bool = False, strip_bytes: int = 16
) -> bytes:
    """A TIFF exactly as described: no library adds or fixes any tag."""
    data = bytearray(b"II*\x00" if order == "<" else b"MM\x00*")
    data += b"\x00\x00\x00\x00"
    link_at = 4
    first_ifd = 0
    for page in pages:
        strip_at = len(data)
        data += b"\x55" * strip_bytes
        tags: Tags = {
            STRIP_OFFSETS: (LONG, [strip_at]),
            STRIP_BYTE_COUNTS: (LONG, [strip_bytes]),
        }
        tags.update(page)
        entries = []
        for tag, spec in sorted((t, s) for t, s in tags.items() if s is not None):
            ftype, values = spec
            if ftype == RATIONAL:
                raw = b"".join(struct.pack(order + "II", *v) for v in values)  # type: ignore[misc]
            else:
                raw = b"".join(
                    struct.pack(order + ("H" if ftype == SHORT else "I"), v) for v in values
                )
            if len(raw) <= 4:
                field = raw.ljust(4, b"\x00")
            else:
                if len(data) % 2:
                    data += b"\x00"
                field = struct.pack(order + "I", len(data))
                data += raw
            entries.append(struct.pack(order + "HHI", tag, ftype, len(values)) + field)
        if len(data) % 2:
            data += b"\x00"
        ifd_at = len(data)
        first_ifd = first_ifd or ifd_at
        struct.pack_into(order + "I", data, link_at, ifd_at)
        data += struct.pack(order + "H", len(entries)) + b"".join(entries)
        link_at = len(data)
        data += b"\x00\x00\x00\x00"
    if loop:
        struct.pack_into(order + "I", data, link_at, first_ifd)
    return bytes(data)


def write(tmp_path: Path, content: bytes, name: str = "doc.tif") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def rejected(path: Path) -> TiffRejected:
    with pytest.raises(TiffRejected) as caught:
        check_tiff(path)
    assert caught.value.message == str(caught.value)
    return caught.value


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_valid_multipage_document_in_both_byte_orders(tmp_path: Path, order: str) -> None:
    standard = fax_tags(yres=(RATIONAL, [(98, 1)]))
    path = write(tmp_path, build_tiff([fax_tags(), standard, fax_tags()], order))
    document = check_tiff(path)
    assert document.page_count == 3
    assert [p.resolution for p in document.pages] == ["fine", "standard", "fine"]
    assert document.pages[0].width == 1728
    assert document.pages[1].y_dpi == 98
    assert count_pages(path) == 3


@pytest.mark.parametrize(
    ("x", "y", "unit", "resolution"),
    [
        ((204, 1), (98, 1), 2, "standard"),
        ((200, 1), (100, 1), 2, "standard"),
        ((200, 1), (200, 1), 2, "fine"),
        ((8040, 100), (3850, 100), 3, "standard"),  # T.4 metric: 8.04 x 3.85 lines/mm
        ((8040, 100), (7700, 100), 3, "fine"),
        ((8031, 100), (7700, 100), 3, "fine"),  # spandsp's own figure for 204 dpi
    ],
)
def test_fax_resolutions_accepted(
    tmp_path: Path, x: tuple[int, int], y: tuple[int, int], unit: int, resolution: str
) -> None:
    tags = fax_tags(xres=(RATIONAL, [x]), yres=(RATIONAL, [y]), unit=(SHORT, [unit]))
    assert check_tiff(write(tmp_path, build_tiff([tags]))).pages[0].resolution == resolution


def test_resolution_unit_defaults_to_inches(tmp_path: Path) -> None:
    assert check_tiff(write(tmp_path, build_tiff([fax_tags(unit=None)]))).page_count == 1


@pytest.mark.parametrize(
    ("changes", "reason", "words"),
    [
        ({"bps": None}, TiffReason.BITS_PER_SAMPLE_MISSING, "BitsPerSample"),
        ({"bps": (SHORT, [8])}, TiffReason.NOT_BLACK_AND_WHITE, "8 bits per pixel"),
        (
            {"bps": (SHORT, [1, 1, 1]), "spp": (SHORT, [3])},
            TiffReason.SAMPLES_PER_PIXEL,
            "3 colour channels",
        ),
        ({"photometric": (SHORT, [3])}, TiffReason.PHOTOMETRIC, "palette"),
        ({"width": (SHORT, [1700])}, TiffReason.WRONG_WIDTH, "1700 pixels wide"),
        ({"width": (LONG, [2048])}, TiffReason.WRONG_WIDTH, "exactly 1728"),
        ({"xres": None}, TiffReason.RESOLUTION_MISSING, "horizontal resolution"),
        ({"xres": None, "yres": None}, TiffReason.RESOLUTION_MISSING, "horizontal and vertical"),
        ({"unit": (SHORT, [1])}, TiffReason.RESOLUTION_UNIT, "without a unit"),
        ({"xres": (RATIONAL, [(300, 1)])}, TiffReason.RESOLUTION_INVALID, "300 x 196"),
        ({"yres": (RATIONAL, [(392, 1)])}, TiffReason.RESOLUTION_INVALID, "204 x 392"),
        ({"yres": (RATIONAL, [(196, 0)])}, TiffReason.RESOLUTION_INVALID, "204 x 98"),
        ({"compression": (SHORT, [5])}, TiffReason.COMPRESSION, "LZW"),
        ({"compression": (SHORT, [2])}, TiffReason.COMPRESSION, "modified Huffman"),
        ({"compression": (SHORT, [7])}, TiffReason.COMPRESSION, "JPEG"),
        ({"tile_width": (SHORT, [256])}, TiffReason.TILED, "tiles"),
        ({"strip_offsets": None}, TiffReason.NO_IMAGE_DATA, "no image data"),
        ({"strip_byte_counts": None}, TiffReason.DAMAGED, "not indexed"),
        ({"strip_byte_counts": (LONG, [10**6])}, TiffReason.DAMAGED, "cut short"),
    ],
)
def test_bad_page_is_refused_with_its_reason(
    tmp_path: Path, changes: dict[str, object], reason: TiffReason, words: str
) -> None:
    bad = fax_tags(**changes)  # type: ignore[arg-type]
    for order in ("<", ">"):
        error = rejected(write(tmp_path, build_tiff([fax_tags(), bad], order)))
        assert error.reason_code is reason
        assert error.page == 2
        assert error.message.startswith("Page 2: ")
        assert words in error.message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", TiffReason.NOT_TIFF),
        (b"%PDF-1.7\n" + b"\x00" * 100, TiffReason.NOT_TIFF),
        (b"II+\x00\x08\x00\x00\x00" + b"\x00" * 16, TiffReason.NOT_TIFF),  # BigTIFF
        (b"II*\x00\x00\x00\x00\x00", TiffReason.NO_PAGES),
        (b"II*\x00\xff\xff\x00\x00", TiffReason.DAMAGED),  # first page past the end
    ],
    ids=["empty", "pdf", "bigtiff", "no-pages", "dangling"],
)
def test_not_a_usable_tiff(tmp_path: Path, content: bytes, reason: TiffReason) -> None:
    assert rejected(write(tmp_path, content)).reason_code is reason
    assert count_pages(tmp_path / "doc.tif") == 0


def test_page_list_that_loops_is_damaged(tmp_path: Path) -> None:
    path = write(tmp_path, build_tiff([fax_tags(), fax_tags()], loop=True))
    assert rejected(path).reason_code is TiffReason.DAMAGED


def test_truncated_file_is_damaged(tmp_path: Path) -> None:
    whole = build_tiff([fax_tags(), fax_tags()])
    assert rejected(write(tmp_path, whole[:-20])).reason_code is TiffReason.DAMAGED


def test_missing_file(tmp_path: Path) -> None:
    assert rejected(tmp_path / "nope.tif").reason_code is TiffReason.UNREADABLE


def page(width: int = 1728, mode: str = "1") -> Image.Image:
    image = Image.new(mode, (width, 300), "white")
    ImageDraw.Draw(image).rectangle((100, 100, 600, 200), fill="black")
    return image


@pytest.mark.parametrize(
    ("image", "options", "reason"),
    [
        (page(), {"compression": "group4", "dpi": (204, 196)}, None),
        (page(), {"compression": "group3", "dpi": (204, 98)}, None),
        # Pillow's uncompressed writer leaves out BitsPerSample: spandsp refuses it (41).
        (page(), {"dpi": (204, 196)}, TiffReason.BITS_PER_SAMPLE_MISSING),
        # Without dpi, spandsp would silently send at standard resolution.
        (page(), {"compression": "group4"}, TiffReason.RESOLUTION_MISSING),
        (page(mode="L"), {"dpi": (204, 196)}, TiffReason.NOT_BLACK_AND_WHITE),
        (page(mode="RGB"), {"dpi": (204, 196)}, TiffReason.NOT_BLACK_AND_WHITE),
        (page(width=1700), {"compression": "group4", "dpi": (204, 196)}, TiffReason.WRONG_WIDTH),
        (page(), {"compression": "tiff_lzw", "dpi": (204, 196)}, TiffReason.COMPRESSION),
        (page(), {"compression": "group4", "dpi": (300, 300)}, TiffReason.RESOLUTION_INVALID),
    ],
    ids=["g4", "g3", "raw", "no-dpi", "grey", "rgb", "narrow", "lzw", "300dpi"],
)
def test_pillow_written_files(
    tmp_path: Path, image: Image.Image, options: dict[str, Any], reason: TiffReason | None
) -> None:
    path = tmp_path / "pillow.tif"
    image.save(path, **options)
    if reason is None:
        assert check_tiff(path).page_count == 1
    else:
        assert rejected(path).reason_code is reason
