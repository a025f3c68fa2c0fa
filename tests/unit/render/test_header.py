"""The page header line: its wording from the format string, and the strip above each page.

Pages are decoded by Pillow (libtiff), not by our writer, and compared with the strip
and the original page pixel for pixel: the spliced Group 4 data must decode to exactly
the strip on top of the untouched page.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faxbox.fax.tiffcheck import check_tiff
from faxbox.render import Resolution, render
from faxbox.render.header import HeaderLine, strip_bits, strip_rows, with_header
from faxbox.shared.tagline import (
    DEFAULT_HEADER_FORMAT,
    HeaderFields,
    HeaderFormatError,
    check_format,
    header_text,
)
from tests.unit.render.pagekit import Pixels, gs_pdf, text_ps

FIELDS = HeaderFields(
    moment=datetime(2026, 7, 4, 18, 5, tzinfo=UTC),
    timezone="America/New_York",
    sender_name="Müller & Co",
    our_number="+16465550101",
    identity="MULLER",
    destination="+12125550123",
    fax_id="fax_01",
)


def line(fmt: str = DEFAULT_HEADER_FORMAT) -> HeaderLine:
    return lambda page, pages: header_text(fmt, FIELDS, page, pages)


def frames(tiff: bytes) -> list[Pixels]:
    out: list[Pixels] = []
    with Image.open(io.BytesIO(tiff)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            out.append(np.asarray(image.convert("L")))
    return out


def three_pages(resolution: Resolution = Resolution.FINE) -> bytes:
    pdf = gs_pdf([text_ps(10 * (n + 1)) for n in range(3)])
    return render(pdf, kind="pdf", resolution=resolution).tiff


def test_the_default_line_names_sender_number_local_time_and_page_of_total() -> None:
    assert header_text(DEFAULT_HEADER_FORMAT, FIELDS, 2, 3) == (
        "Muller & Co  +16465550101",
        "2026-07-04 14:05 EDT",
        "page 2/3",
    )


def test_every_field_and_a_literal_percent() -> None:
    fmt = "%%l %%d %%i|%d.%m.%Y|%%p of %%t 100%%%%"
    assert header_text(fmt, FIELDS, 1, 1) == (
        "MULLER +12125550123 fax_01",
        "04.07.2026",
        "1 of 1 100%",
    )


@pytest.mark.parametrize(
    ("fmt", "complaint"),
    [
        ("%%q", "not a header field"),
        ("x" * 201, "longer than 200"),
        ("one\ntwo", "one line"),
    ],
)
def test_bad_formats_are_refused_with_what_to_change(fmt: str, complaint: str) -> None:
    with pytest.raises(HeaderFormatError, match=complaint):
        check_format(fmt)


def test_good_formats_pass() -> None:
    assert check_format(DEFAULT_HEADER_FORMAT) == DEFAULT_HEADER_FORMAT
    assert check_format("Page %%p") == "Page %%p"


@pytest.mark.parametrize("resolution", [Resolution.FINE, Resolution.STANDARD])
def test_each_page_gets_its_strip_above_it_and_keeps_every_pixel(resolution: Resolution) -> None:
    original = three_pages(resolution)
    stamped = with_header(original, line())
    rows = strip_rows(resolution.y_dpi)
    before, after = frames(original), frames(stamped)
    assert len(after) == 3
    for number, (page, headed) in enumerate(zip(before, after, strict=True), start=1):
        assert headed.shape == (page.shape[0] + rows, 1728)
        assert np.array_equal(headed[rows:], page), f"page {number} changed"
        expected = strip_bits(
            header_text(DEFAULT_HEADER_FORMAT, FIELDS, number, 3), resolution.y_dpi
        )
        drawn = np.packbits(headed[:rows] == 0, axis=1)
        assert np.array_equal(drawn, expected), f"page {number}'s strip"
        assert (headed[:rows] == 0).any()
    # Each page says its own number: strips of pages 1 and 2 differ.
    assert not np.array_equal(after[0][:rows], after[1][:rows])


def test_the_stamped_file_is_one_spandsp_accepts(tmp_path: Path) -> None:
    path = tmp_path / "fax.tif"
    path.write_bytes(with_header(three_pages(), line()))
    check_tiff(path)


def test_pages_count_in_the_whole_document() -> None:
    original = three_pages()
    # A redial sending the last two pages of five: they say 4/5 and 5/5.
    tail = with_header(original, line("page %%p/%%t"), first_page=4, pages_total=5)
    rows = strip_rows(196)
    got = [np.packbits(page[:rows] == 0, axis=1) for page in frames(tail)]
    for number, drawn in zip((4, 5, 6), got, strict=True):
        expected = strip_bits(header_text("page %%p/%%t", FIELDS, number, 5))
        assert np.array_equal(drawn, expected)


def test_a_resumed_document_leaves_out_the_confirmed_pages_and_keeps_their_numbers() -> None:
    original = three_pages()
    # A redial after pages 1 and 2 were confirmed: only page 3 goes, saying 3/3.
    tail = with_header(original, line("page %%p/%%t"), skip_pages=2)
    rows = strip_rows(196)
    (page,) = frames(tail)
    expected = strip_bits(header_text("page %%p/%%t", FIELDS, 3, 3))
    assert np.array_equal(np.packbits(page[:rows] == 0, axis=1), expected)
    assert np.array_equal(page[rows:], frames(original)[2])
    with pytest.raises(ValueError, match="3 of 3"):
        with_header(original, line(), skip_pages=3)


def test_pages_in_other_codings_are_encoded_again(tmp_path: Path) -> None:
    page = Image.new("1", (1728, 300), 1)
    page.paste(0, (100, 100, 400, 200))
    buffer = io.BytesIO()
    page.save(buffer, format="TIFF", compression="group3", dpi=(204, 196))
    stamped = frames(with_header(buffer.getvalue(), line("page %%p")))
    rows = strip_rows(196)
    assert stamped[0].shape == (300 + rows, 1728)
    assert np.array_equal(stamped[0][rows:] == 0, np.asarray(page) == 0)


def test_long_fields_shrink_to_fit_the_line() -> None:
    wide = HeaderFields(moment=FIELDS.moment, sender_name="W" * 70, our_number="+1" + "5" * 13)
    bits = strip_bits(header_text(DEFAULT_HEADER_FORMAT, wide, 10, 10))
    black_columns = np.flatnonzero(np.unpackbits(bits, axis=1).any(axis=0))
    assert black_columns.min() >= 40
    assert black_columns.max() <= 1728 - 40


def test_a_faxbox_keeps_only_a_usable_format() -> None:
    from pydantic import ValidationError

    from faxbox.shared.store import Faxbox

    box = Faxbox(account_id="acc_1", owner_user_id="usr_1", header_format="From %%n|%%p/%%t")
    assert box.header_format == "From %%n|%%p/%%t"
    assert (
        Faxbox(account_id="acc_1", owner_user_id="usr_1", header_format=" ").header_format is None
    )
    with pytest.raises(ValidationError, match="not a header field"):
        Faxbox(account_id="acc_1", owner_user_id="usr_1", header_format="%%z")
