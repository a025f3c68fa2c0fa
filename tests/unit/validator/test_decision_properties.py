"""Whatever arrives, the decision settles: accepted, rejected or ignored, or — for bytes that
are not an email at all — a PermanentError. It never crashes."""

from __future__ import annotations

import asyncio
from datetime import date
from email import encoders
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faxbox.shared.bus import PermanentError
from faxbox.validator.decision import Decision, Limits, Outcome, evaluate
from faxbox.validator.renderer import InlineRenderer
from tests.unit.validator.mailkit import (
    FAX_TO,
    REALM,
    FakeCounters,
    FakeDirectory,
    pdf,
    standard_world,
)

# Damaged TIFFs are the point here; Pillow says so on every one of them.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

_PDF = pdf()
_SENDERS = st.sampled_from(
    [
        "alice@example.com",
        "Bob <BOB@example.com>",
        "x@partner.example",
        "dave@secure.example",
        "erin@example.com",
        "frank@example.com",
        "nobody@nowhere.example",
        "",
        "<>",
        "@@",
        "\u00e9@\u00e9",
    ]
)
_RECIPIENTS = st.sampled_from(
    [FAX_TO, f"2125551234@{REALM}", f"fax@{REALM}", f"+44 20@{REALM}", "x@other.example", "", ";"]
)
_TYPES = st.sampled_from(
    [
        "application/pdf",
        "image/tiff",
        "application/octet-stream",
        "image/png",
        "text/plain",
        "text/html",
        "message/rfc822",
        "application/x-weird",
        "multipart/mixed",
        "image/gif",
    ]
)
_EXTRA_HEADERS = st.sampled_from(
    [
        "Auto-Submitted: auto-generated",
        "Precedence: list",
        "Return-Path: <>",
        f"Cc: {FAX_TO}",
        "Authentication-Results: mx; dmarc=pass",
        "Authentication-Results: ;;(",
        "Message-ID: <a@b>",
    ]
)
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.just(_PDF),
    st.binary(max_size=200).map(lambda b: b"%PDF-1.4\n" + b),
    st.binary(max_size=200).map(lambda b: b"II*\x00" + b),
    st.binary(max_size=200).map(lambda b: _PDF[: len(b)]),
)
_NAMES = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["scan.pdf", "SCAN.PDF", "a.tif", "logo.png", "=?utf-8?b?w6k=?=.pdf"]),
)


@st.composite
def leaves(draw: st.DrawFn) -> Message:
    maintype, _, subtype = draw(_TYPES).partition("/")
    if maintype == "multipart":
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype)
    payload = draw(_PAYLOADS)
    part.set_payload(payload)
    # The generator writes 8-bit payloads only through base64 (as every mailer does).
    if draw(st.booleans()) or not payload.isascii():
        encoders.encode_base64(part)
    disposition = draw(st.sampled_from([None, "attachment", "inline", "weird;;"]))
    name = draw(_NAMES)
    if disposition is not None and name is not None:
        part.add_header("Content-Disposition", disposition, filename=name)
    elif disposition is not None:
        part.add_header("Content-Disposition", disposition)
    if draw(st.booleans()):
        part["Content-ID"] = "<x@y>"
    return part


def trees() -> st.SearchStrategy[Message]:
    def extend(children: st.SearchStrategy[Message]) -> st.SearchStrategy[Message]:
        @st.composite
        def node(draw: st.DrawFn) -> Message:
            sub = draw(st.sampled_from(["mixed", "alternative", "related", "rfc822"]))
            kids = draw(st.lists(children, max_size=4))
            if sub == "rfc822":
                wrapper = MIMEBase("message", "rfc822")
                inner = kids[0] if kids else MIMEText("x")
                wrapper.set_payload([inner])
                return wrapper
            # A boundary of our own: the default one comes from ``random``, which
            # Hypothesis cannot replay.
            multi = MIMEMultipart(sub, boundary=f"=_b{draw(st.integers(0, 10**9))}_=")
            for kid in kids:
                multi.attach(kid)
            return multi

        return node()

    return st.recursive(st.one_of(leaves(), st.just(MIMEText("body"))), extend, max_leaves=8)


@st.composite
def emails(draw: st.DrawFn) -> bytes:
    root = draw(trees())
    root["From"] = draw(_SENDERS)
    root["To"] = draw(_RECIPIENTS)
    for header in draw(st.lists(_EXTRA_HEADERS, max_size=2)):
        name, _, value = header.partition(": ")
        root[name] = value
    raw = root.as_bytes()
    if draw(st.booleans()):
        # Damage it: cut it short or flip bytes, as broken mailers and disks do.
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=20))
    return raw


def settle(raw: bytes) -> Decision | None:
    async def run() -> Decision:
        return await evaluate(
            raw,
            directory=FakeDirectory(standard_world()),
            counters=FakeCounters(),
            renderer=InlineRenderer(),
            limits=Limits(trusted_authserv_ids=frozenset({"mx"})),
            day=date(2026, 11, 27),
            reserve_for="fax1",
        )

    try:
        decision = asyncio.run(run())
    except PermanentError:
        return None
    assert decision.outcome in (Outcome.ACCEPTED, Outcome.REJECTED, Outcome.IGNORED)
    if decision.outcome is Outcome.REJECTED:
        assert decision.reasons
        assert decision.owner is not None
    if decision.outcome is Outcome.IGNORED:
        assert decision.ignored is not None
    if decision.outcome is Outcome.ACCEPTED:
        assert decision.fax_tiff
        assert decision.number is not None
    assert isinstance(decision.summary()["decision"], str)
    return decision


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(emails())
def test_arbitrary_mime_trees_settle(raw: bytes) -> None:
    settle(raw)


@_SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_settle(raw: bytes) -> None:
    settle(raw)


@_SETTINGS
@given(st.binary(max_size=500))
def test_arbitrary_bytes_after_headers_settle(body: bytes) -> None:
    settle(b"From: alice@example.com\r\nTo: " + FAX_TO.encode() + b"\r\n" + body)
