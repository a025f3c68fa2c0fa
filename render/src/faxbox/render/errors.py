"""Why a document cannot be faxed, in words the sender can act on."""

from __future__ import annotations

from enum import StrEnum


class RefusalCode(StrEnum):
    UNSUPPORTED_DOCUMENT = "unsupported_document"
    ENCRYPTED_PDF = "encrypted_pdf"
    UNREADABLE_DOCUMENT = "unreadable_document"
    EMPTY_DOCUMENT = "empty_document"
    TOO_MANY_PAGES = "too_many_pages"
    PAGE_TOO_LARGE = "page_too_large"
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


def unreadable(what: str = "document") -> RenderRefused:
    return RenderRefused(
        RefusalCode.UNREADABLE_DOCUMENT,
        f"The {what} could not be read: it is damaged or incomplete. "
        "Please save or export it again and resend it.",
    )


def too_many_pages(pages: int, max_pages: int) -> RenderRefused:
    return RenderRefused(
        RefusalCode.TOO_MANY_PAGES,
        f"The document has {pages} pages; at most {max_pages} pages can be sent in one fax. "
        "Please split it into smaller documents.",
    )


def empty() -> RenderRefused:
    return RenderRefused(RefusalCode.EMPTY_DOCUMENT, "The document has no pages to fax.")


def page_too_large(page: int | None) -> RenderRefused:
    where = f"Page {page} of the document" if page is not None else "A page of the document"
    return RenderRefused(
        RefusalCode.PAGE_TOO_LARGE,
        f"{where} has a size or shape no fax machine can print (for example a very long "
        "strip or an enormous image). Please resend it on ordinary A4 or Letter pages.",
        page,
    )


def rendering_timeout(timeout_s: float) -> RenderRefused:
    return RenderRefused(
        RefusalCode.RENDERING_TIMEOUT,
        f"The document took too long to prepare for faxing (more than "
        f"{timeout_s:g} seconds). It may be unusually complex; please send a simpler "
        "version, for example printed to PDF again or split into parts.",
    )
