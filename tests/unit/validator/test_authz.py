"""Authentication-Results parsing and domain alignment."""

from __future__ import annotations

import pytest

from faxbox.validator.authz import (
    aligned,
    parse_authentication_results,
    permission_match,
    sender_authenticated,
)


def test_parse_reads_methods_results_and_properties_without_comments() -> None:
    parsed = parse_authentication_results(
        "MX.Example.NET 1; spf=pass (sender IP is 192.0.2.1; ok) smtp.mailfrom=a@b.example;\r\n"
        ' dkim=pass header.d=b.example header.s="sel;1";'
        " dmarc=fail (p=reject) header.from=b.example"
    )
    assert parsed is not None
    assert parsed.authserv_id == "mx.example.net"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "fail"),
    ]
    assert parsed.results[0].properties == {"smtp.mailfrom": "a@b.example"}
    assert parsed.results[1].properties["header.s"] == "sel;1"


@pytest.mark.parametrize("value", ["", ";", "mx; none", "(only a comment)"])
def test_parse_tolerates_empty_results(value: str) -> None:
    parsed = parse_authentication_results(value)
    assert parsed is None or parsed.results == ()


@pytest.mark.parametrize(
    ("domain", "from_domain", "expected"),
    [
        ("example.com", "example.com", True),
        ("mail.example.com", "example.com", True),
        ("example.com", "sub.example.com", True),
        ("evil.example", "example.com", False),
        ("notexample.com", "example.com", False),
        ("com", "example.com", False),
    ],
)
def test_alignment(domain: str, from_domain: str, expected: bool) -> None:
    assert aligned(domain, from_domain) is expected


def test_only_trusted_authserv_ids_count() -> None:
    headers = ["mx.evil.example; dmarc=pass header.from=b.example", "mx.ours; spf=fail"]
    assert not sender_authenticated("b.example", headers, ["mx.ours"])
    assert sender_authenticated("b.example", headers, ["MX.EVIL.EXAMPLE"])
    assert not sender_authenticated(None, headers, ["mx.evil.example"])


def test_dmarc_pass_for_another_domain_does_not_count() -> None:
    headers = ["mx.ours; dmarc=pass header.from=other.example"]
    assert not sender_authenticated("b.example", headers, ["mx.ours"])


@pytest.mark.parametrize(
    ("entry", "sender", "matches"),
    [
        ("@Partner.example", "x@partner.example", True),
        ("partner.example", "X@PARTNER.EXAMPLE", True),
        ("partner.example", "x@sub.partner.example", False),
        ("carol@other.example", "Carol@Other.example", True),
        ("carol@other.example", "carl@other.example", False),
    ],
)
def test_permission_entries(entry: str, sender: str, matches: bool) -> None:
    assert (permission_match(entry, sender) is not None) is matches
