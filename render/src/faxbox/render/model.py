"""What a rendering asks for and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from faxbox.render.bilevel import Conversion

DEFAULT_MAX_PAGES: Final = 100


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
