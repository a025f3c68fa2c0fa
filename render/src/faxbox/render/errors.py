"""Why a document cannot be faxed, in words the sender can act on.

Every message names the true cause: a damaged file is not called too large, a kind of
TIFF that cannot be decoded here is not called damaged, a page too long to print says
how long it is and how long a page may be.
"""

from __future__ import annotations

from enum import StrEnum

MM_PER_INCH = 25.4


class RefusalCode(StrEnum):
    UNSUPPORTED_DOCUMENT = "unsupported_document"  # not a PDF or TIFF at all
    UNSUPPORTED_TIFF = "unsupported_tiff"  # a TIFF stored in a way that cannot be decoded
    ENCRYPTED_PDF = "encrypted_pdf"
    UNREADABLE_DOCUMENT = "unreadable_document"
    EMPTY_DOCUMENT = "empty_document"
    TOO_MANY_PAGES = "too_many_pages"
    PAGE_TOO_LARGE = "page_too_large"
    # More pixels or memory than preparing a fax may take (an image bomb, a huge scan).
    TOO_COMPLEX = "too_complex"
    RENDERING_TIMEOUT = "rendering_timeout"


class RenderRefused(Exception):
    """The document cannot be turned into fax pages; ``message`` is meant for the sender."""

    def __init__(self, code: RefusalCode | str, message: str, page: int | None = None) -> None:
        super().__init__(message)
        self.code = RefusalCode(code)
        self.message = message
        self.page = page

    def __reduce__(self) -> tuple[type[RenderRefused], tuple[str, str, int | None]]:
        # Crosses the process boundary from the rendering worker.
        return (type(self), (self.code.value, self.message, self.page))

    def __repr__(self) -> str:
        return f"RenderRefused({self.code.value!r}, {self.message!r}, page={self.page})"


def not_a_document() -> RenderRefused:
    return RenderRefused(
        RefusalCode.UNSUPPORTED_DOCUMENT,
        "The attachment is not a PDF or TIFF file. Only PDF and TIFF documents can be faxed.",
    )


def unreadable(what: str = "document", page: int | None = None) -> RenderRefused:
    where = f"Page {page} of the {what}" if page is not None else f"The {what}"
    return RenderRefused(
        RefusalCode.UNREADABLE_DOCUMENT,
        f"{where} could not be read: it is damaged or incomplete. "
        "Please save or export it again and resend it.",
        page,
    )


def truncated_pdf() -> RenderRefused:
    return RenderRefused(
        RefusalCode.UNREADABLE_DOCUMENT,
        "The PDF is incomplete: it stops before its end (it was probably cut off while "
        "being downloaded or attached), so pages may be missing. Please attach the whole "
        "file again.",
    )


def unsupported_tiff(detail: str, page: int | None = None) -> RenderRefused:
    where = f"Page {page} of the TIFF image" if page is not None else "The TIFF image"
    return RenderRefused(
        RefusalCode.UNSUPPORTED_TIFF,
        f"{where} is stored in a form that cannot be read here ({detail}). Please save "
        "it again as a PDF, or as a TIFF with ordinary compression (none, LZW, Deflate, "
        "JPEG or fax Group 3/4), and resend it.",
        page,
    )


def encrypted_pdf() -> RenderRefused:
    return RenderRefused(
        RefusalCode.ENCRYPTED_PDF,
        "The PDF is protected with a password, so it cannot be opened for "
        "faxing. Please send a copy without password protection.",
    )


def too_many_pages(pages: int, max_pages: int) -> RenderRefused:
    return RenderRefused(
        RefusalCode.TOO_MANY_PAGES,
        f"The document has {pages} pages; at most {max_pages} pages can be sent in one fax. "
        "Please split it into smaller documents.",
    )


def empty() -> RenderRefused:
    return RenderRefused(RefusalCode.EMPTY_DOCUMENT, "The document has no pages to fax.")


def no_page_size(page: int) -> RenderRefused:
    return RenderRefused(
        RefusalCode.UNREADABLE_DOCUMENT,
        f"Page {page} of the document has no size (its page box is empty or invalid), so "
        "it is damaged. Please save or export it again and resend it.",
        page,
    )


def page_too_long(page: int, size: str, length_mm: float, limit_mm: float) -> RenderRefused:
    return RenderRefused(
        RefusalCode.PAGE_TOO_LARGE,
        f"Page {page} of the document is {size}: on the 215 mm wide fax page it would be "
        f"{length_mm:.0f} mm ({length_mm / MM_PER_INCH:.1f} in) long, and a fax page can be "
        f"at most {limit_mm:.0f} mm ({limit_mm / MM_PER_INCH:.1f} in) long. Please split it "
        "into shorter pages, for example A4 or Letter, and resend it.",
        page,
    )


def too_many_pixels(page: int | None, pixels: int | None, limit: int) -> RenderRefused:
    where = f"Page {page} of the document" if page is not None else "A page of the document"
    count = f"{pixels / 1e6:.0f} million pixels" if pixels else "more pixels than that"
    return RenderRefused(
        RefusalCode.TOO_COMPLEX,
        f"{where} is an image of {count}; an image of at most {limit / 1e6:.0f} million "
        "pixels can be faxed. Please resend it at a lower resolution (300 dpi is plenty "
        "for a fax).",
        page,
    )


def out_of_memory(limit_bytes: int | None = None) -> RenderRefused:
    limit = f" ({limit_bytes / 2**20:.0f} MB)" if limit_bytes else ""
    return RenderRefused(
        RefusalCode.TOO_COMPLEX,
        f"The document is too complex to prepare for faxing: its pages need more memory "
        f"than a fax may take{limit}, usually because of very large images. Please resend "
        "it at a lower resolution (300 dpi is plenty for a fax), or printed to PDF again.",
    )


def rendering_timeout(timeout_s: float) -> RenderRefused:
    return RenderRefused(
        RefusalCode.RENDERING_TIMEOUT,
        f"The document took too long to prepare for faxing (more than "
        f"{timeout_s:g} seconds). It may be unusually complex; please send a simpler "
        "version, for example printed to PDF again or split into parts.",
    )
