"""Authentication-Results parsing and the rules that prove a sender."""

from __future__ import annotations

import pytest

from faxbox.validator.authz import (
    parse_authentication_results,
    permission_match,
    prove_sender,
)

OURS = ["mx.ours.example"]


def proven(sender: str | None, *headers: str, trusted: list[str] = OURS) -> bool:
    return prove_sender(sender, headers, trusted).proven


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
    ("result", "expected"),
    [
        # DMARC: header.from must be From's domain itself.
        ("dmarc=pass header.from=b.example", True),
        ("dmarc=pass header.from=B.Example", True),
        ("dmarc=pass header.from=other.example", False),
        ("dmarc=pass header.from=sub.b.example", False),
        ("dmarc=pass", False),
        ("dmarc=fail header.from=b.example", False),
        # DKIM: d= is From's domain or a parent of it, never another domain.
        ("dkim=pass header.d=b.example", True),
        ("dkim=pass header.d=mail.b.example", False),
        ("dkim=pass header.d=other.example", False),
        ("dkim=pass header.d=notb.example", False),
        ("dkim=pass header.d=example", False),
        ("dkim=pass header.i=@b.example", True),
        ("dkim=neutral header.d=b.example", False),
        # SPF: the envelope sender's domain is From's domain or a parent of it.
        ("spf=pass smtp.mailfrom=bounce@b.example", True),
        ("spf=pass smtp.mailfrom=b.example", True),
        ("spf=pass smtp.mailfrom=x@other.example", False),
        ("spf=pass smtp.mailfrom=<>", False),
        ("spf=softfail smtp.mailfrom=x@b.example", False),
        # SMTP AUTH: logged in as exactly the From address.
        ("auth=pass smtp.auth=alice@b.example", True),
        ("auth=pass smtp.auth=ALICE@b.example", True),
        ("auth=pass smtp.auth=mallory@b.example", False),
        ("auth=pass smtp.auth=alice", False),
        ("auth=fail smtp.auth=alice@b.example", False),
    ],
)
def test_what_proves_a_sender(result: str, expected: bool) -> None:
    assert proven("alice@b.example", f"mx.ours.example; {result}") is expected


def test_a_parent_domain_signs_for_its_subdomains() -> None:
    header = "mx.ours.example; dkim=pass header.d=b.example"
    assert proven("alice@mail.b.example", header)
    assert not proven("alice@b.example", "mx.ours.example; dkim=pass header.d=mail.b.example")


def test_only_the_topmost_trusted_header_counts() -> None:
    """A forged pass below our own failing header: the sender wrote it, it proves nothing."""
    ours = "mx.ours.example; dmarc=fail header.from=b.example; spf=fail smtp.mailfrom=b.example"
    forged = "mx.ours.example; dmarc=pass header.from=b.example"
    assert not proven("alice@b.example", ours, forged)
    proof = prove_sender("alice@b.example", [ours, forged], OURS)
    assert proof.header is not None
    assert proof.found() == "dmarc=fail, spf=fail"
    # Headers of other servers above ours change nothing; ours is still the one read.
    assert proven("alice@b.example", "relay.other; spf=fail", forged)


def test_a_look_alike_authserv_id_is_not_ours() -> None:
    for look_alike in ("mx.ours.example.evil.example", "evil-mx.ours.example", "ours.example"):
        assert not proven("alice@b.example", f"{look_alike}; dmarc=pass header.from=b.example")
    assert proven("alice@b.example", "MX.Ours.Example; dmarc=pass header.from=b.example")


def test_without_a_trusted_server_nobody_is_proven() -> None:
    header = "mx.ours.example; dmarc=pass header.from=b.example"
    assert not proven("alice@b.example", header, trusted=[])
    assert not proven(None, header)
    assert prove_sender("alice@b.example", [], OURS).header is None


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
