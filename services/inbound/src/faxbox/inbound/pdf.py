"""Received fax TIFF → PDF, embedding the pages' Group 4 data as it is (img2pdf).

Fax pages are not square-pixelled: 204 dpi across, 98 (standard) or 196 (fine) dpi
down. The page size is computed from those resolutions so a standard-resolution page
is not drawn half as tall. The TIFF's own tags are used when they name a fax
resolution; otherwise the resolution T.30 negotiated (from the call's statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import img2pdf

FAX_X_DPI = 204.0
FAX_Y_DPIS = (98.0, 196.0, 391.0)
PIXELS_PER_METRE_PER_DPI = 1 / 0.0254
IMG2PDF_NO_DPI = (96.0, 96.0)


def dpi_from_ppm(pixels_per_metre: int) -> float:
    """T.30 reports resolutions in pixels per metre (7700 fine, 3850 standard, 8031 across)."""
    return pixels_per_metre / PIXELS_PER_METRE_PER_DPI


def _snap(value: float, targets: tuple[float, ...]) -> float | None:
    for target in targets:
        if abs(value - target) <= target * 0.05:
            return target
    return None


def fax_layout(
    y_dpi_fallback: float,
) -> Callable[[int, int, tuple[float, float]], tuple[float, ...]]:
    y_fallback = _snap(y_dpi_fallback, FAX_Y_DPIS) or 196.0

    def layout(width_px: int, height_px: int, ndpi: tuple[float, float]) -> tuple[float, ...]:
        if tuple(ndpi) == IMG2PDF_NO_DPI:  # what img2pdf assumes when the tags are missing
            ndpi = (FAX_X_DPI, y_fallback)
        x_dpi = _snap(ndpi[0], (FAX_X_DPI,)) or FAX_X_DPI
        y_dpi = _snap(ndpi[1], FAX_Y_DPIS) or y_fallback
        width_pt = width_px / x_dpi * 72.0
        height_pt = height_px / y_dpi * 72.0
        return width_pt, height_pt, width_pt, height_pt

    return layout


def tiff_to_pdf(path: Path, y_resolution_ppm: int = 0) -> bytes:
    fallback = dpi_from_ppm(y_resolution_ppm) if y_resolution_ppm else 196.0
    pdf = img2pdf.convert(str(path), layout_fun=fax_layout(fallback))
    if not isinstance(pdf, bytes):
        raise TypeError("img2pdf returned no PDF")
    return pdf
