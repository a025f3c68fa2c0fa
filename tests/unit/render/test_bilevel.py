"""Edge smoothing of thresholded pages: one-pixel jaggies go, thin strokes stay."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from faxbox.render.bilevel import Conversion, smooth_edges, to_bits

Page = npt.NDArray[np.bool_]


def smoothed(black: Page) -> Page:
    packed = smooth_edges(np.packbits(black, axis=1))
    out: Page = np.unpackbits(packed, axis=1)[:, : black.shape[1]].astype(bool)
    return out


def blank(rows: int = 40, cols: int = 128) -> Page:
    return np.zeros((rows, cols), dtype=bool)


def test_bump_and_notch_on_a_vertical_edge() -> None:
    page = blank()
    page[5:35, 30:62] = True  # a block whose right edge is at column 61, crossing a word
    straight = page.copy()
    page[10, 62] = True  # one pixel sticking out
    page[20, 61] = False  # one pixel bitten in
    assert np.array_equal(smoothed(page), straight)


def test_bump_and_notch_on_a_horizontal_edge() -> None:
    page = blank()
    page[5:20, 10:100] = True
    straight = page.copy()
    page[20, 40] = True
    page[19, 70] = False
    page[4, 63] = True  # across the boundary of two 64-pixel words
    assert np.array_equal(smoothed(page), straight)


def test_thin_lines_dots_and_line_ends_are_kept() -> None:
    page = blank()
    page[10, 5:120] = True  # a one-pixel rule: its ends have no solid side
    page[12:38, 64] = True  # a one-pixel stem on a word boundary
    page[30, 20] = True  # a lone dot (the dot of an i at small sizes)
    page[20:23, 100:102] = True  # a 3 x 2 blob
    for i in range(12):  # a one-pixel diagonal and a two-pixel staircase
        page[25 + i, 30 + i] = True
        page[25 + i, 80 + 2 * i : 82 + 2 * i] = True
    assert np.array_equal(smoothed(page), page)


def test_bumps_two_pixels_long_are_kept() -> None:
    page = blank()
    page[5:35, 30:62] = True
    page[10:12, 62] = True  # two rows tall: a feature (a serif's tip), not a jaggy
    page[20, 62:64] = True  # two pixels long
    assert np.array_equal(smoothed(page), page)


def test_only_thresholded_pages_are_smoothed() -> None:
    grey = np.full((40, 128), 255, dtype=np.uint8)
    grey[5:35, 30:62] = 0
    grey[10, 62] = 0
    bits, used = to_bits(grey, Conversion.THRESHOLD)
    assert used is Conversion.THRESHOLD
    assert not np.unpackbits(bits, axis=1)[10, 62]
    bits, used = to_bits(grey, Conversion.HALFTONE)
    assert used is Conversion.HALFTONE
    assert np.unpackbits(bits, axis=1)[10, 62]
