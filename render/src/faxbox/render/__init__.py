"""Documents (PDF or TIFF) to fax-ready Group 4 TIFF pages: a library below the services.

``render`` works in the calling process; ``render_document`` in a child process killed
at a time limit. ``RenderRefused`` says why a document cannot be faxed, in words meant
for its sender.
"""

from faxbox.render.bilevel import Conversion
from faxbox.render.document import detect_kind, inspect_document, render, sniff_kind
from faxbox.render.errors import RefusalCode, RenderRefused
from faxbox.render.g4tiff import FAX_WIDTH, G4TiffWriter
from faxbox.render.geometry import DEFAULT_MAX_LENGTH_MM, X_DPI, fit_page
from faxbox.render.header import strip_image, strip_rows, with_header
from faxbox.render.model import (
    DEFAULT_MAX_PAGES,
    DocumentKind,
    RenderedDocument,
    RenderedPage,
    Resolution,
)
from faxbox.render.picture import page_png
from faxbox.render.sandbox import DEFAULT_MEMORY_LIMIT_BYTES, DEFAULT_TIMEOUT_S, render_document

__all__ = [
    "DEFAULT_MAX_LENGTH_MM",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MEMORY_LIMIT_BYTES",
    "DEFAULT_TIMEOUT_S",
    "FAX_WIDTH",
    "X_DPI",
    "Conversion",
    "DocumentKind",
    "G4TiffWriter",
    "RefusalCode",
    "RenderRefused",
    "RenderedDocument",
    "RenderedPage",
    "Resolution",
    "detect_kind",
    "fit_page",
    "inspect_document",
    "page_png",
    "render",
    "render_document",
    "sniff_kind",
    "strip_image",
    "strip_rows",
    "with_header",
]
