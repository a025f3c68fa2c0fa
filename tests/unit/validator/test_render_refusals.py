"""Every reason the renderer gives reaches the sender under its own rejection code."""

from __future__ import annotations

from faxbox.render import RefusalCode
from faxbox.shared.contracts import RejectionCode
from faxbox.validator.decision import _RENDER_CODES


def test_every_refusal_has_a_code_that_names_its_cause() -> None:
    assert set(_RENDER_CODES) == set(RefusalCode)
    # rendering_failed says "we do not know why": never the answer for a known cause.
    assert RejectionCode.rendering_failed not in _RENDER_CODES.values()
    assert _RENDER_CODES[RefusalCode.PAGE_TOO_LARGE] is RejectionCode.page_too_large
    assert _RENDER_CODES[RefusalCode.RENDERING_TIMEOUT] is RejectionCode.rendering_timeout
    assert _RENDER_CODES[RefusalCode.UNSUPPORTED_TIFF] is RejectionCode.unsupported_document
