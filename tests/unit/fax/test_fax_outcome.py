"""Every spandsp completion code has a failure class and words a person can act on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faxbox.fax import spandsp
from faxbox.fax.outcome import CODES, CODES_BY_NAME, FailureClass, describe

T30_HEADER = Path("/usr/include/spandsp/t30.h")


def header_codes() -> dict[str, int]:
    """``T30_ERR_*`` names and values from the installed header's enum, in C's numbering."""
    if not T30_HEADER.exists():
        pytest.fail(f"{T30_HEADER} missing: install libspandsp-dev")
    text = T30_HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    block = re.search(r"enum\s*\{([^}]*\bT30_ERR_OK\b[^}]*)\}", text)
    assert block is not None, "enum with T30_ERR_OK not found in t30.h"
    codes: dict[str, int] = {}
    value = -1
    for item in block.group(1).split(","):
        item = item.strip()
        if not item:
            continue
        name, _, explicit = item.partition("=")
        value = int(explicit.strip(), 0) if explicit.strip() else value + 1
        codes[name.strip()] = value
    return codes


def test_every_header_code_is_mapped_with_the_same_value() -> None:
    codes = header_codes()
    assert len(codes) > 60  # 0.0.6 has 62; a parse that finds a handful is broken
    assert {name: info.code for name, info in CODES_BY_NAME.items()} == codes


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_code_has_class_and_plain_words(code: int) -> None:
    info = describe(code)
    assert (info.failure_class is None) == (code == 0)
    assert info.message.endswith(".")
    assert info.hint.endswith(".")
    # Written for people, not engineers: no T.30 jargon in what they read.
    for jargon in ("DCS", "DIS", "DCN", "ECM", "T30", "TIFF", "HDLC", "EOP", "MPS"):
        assert jargon not in info.message
        assert jargon not in info.hint
    # spandsp knows every one of these codes too.
    assert spandsp.completion_code_to_str(code) != "???"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("T30_ERR_T0_EXPIRED", FailureClass.LINE),  # nothing answered
        ("T30_ERR_T1_EXPIRED", FailureClass.LINE),  # answered, not a fax
        ("T30_ERR_CEDTONE", FailureClass.LINE),
        ("T30_ERR_CALLDROPPED", FailureClass.LINE),
        ("T30_ERR_CANNOT_TRAIN", FailureClass.PROTOCOL),
        ("T30_ERR_TX_PHDDEAD", FailureClass.PROTOCOL),  # no response after a page
        ("T30_ERR_RX_DCNDATA", FailureClass.PROTOCOL),  # unexpected DCN
        ("T30_ERR_RETRYDCN", FailureClass.PROTOCOL),
        ("T30_ERR_FILEERROR", FailureClass.DOCUMENT),
        ("T30_ERR_BADTIFF", FailureClass.DOCUMENT),
        ("T30_ERR_NOSIZESUPPORT", FailureClass.DOCUMENT),
        ("T30_ERR_NORESSUPPORT", FailureClass.DOCUMENT),
        ("T30_ERR_RX_INCAPABLE", FailureClass.DOCUMENT),
    ],
)
def test_classes(name: str, expected: FailureClass) -> None:
    assert CODES_BY_NAME[name].failure_class is expected


def test_unknown_code_is_a_protocol_failure() -> None:
    info = describe(999)
    assert info.failure_class is FailureClass.PROTOCOL
    assert info.name == "T30_ERR_999"


def test_receiving_side_wording_differs_where_it_must() -> None:
    sent = describe(CODES_BY_NAME["T30_ERR_T0_EXPIRED"].code)
    received = describe(sent.code, receiving=True)
    assert received.failure_class is sent.failure_class
    assert received.message != sent.message
    assert "caller" in received.message
