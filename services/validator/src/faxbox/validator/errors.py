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
