"""The SSRF guard: which webhook URLs are refused, and why."""

from __future__ import annotations

import ipaddress

import pytest

from faxbox.shared.urlguard import UrlRefused, check_url, parse_networks, refusal


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://172.16.5.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fc00::5]/hook", "private"),
        ("http://100.64.0.1/hook", "not public"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[2002:7f00:1::1]/hook", "loopback"),  # 6to4 around 127.0.0.1
    ],
)
async def test_addresses_that_are_not_public_are_refused(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why) as refused:
        await check_url(url)
    assert refused.value.code == "not_public"
    assert "FAXBOX_WEBHOOKS_ALLOWED_NETWORKS" in refused.value.message


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.7, a private address"):
        await check_url("https://hooks.example.com/x", resolver=resolving_to("10.0.0.7"))


async def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await check_url(
            "https://hooks.example.com/x", resolver=resolving_to("93.184.216.34", "127.0.0.1")
        )


async def test_public_addresses_pass_and_are_kept_for_the_connection() -> None:
    target = await check_url(
        "https://hooks.example.com:8443/fax?x=1", resolver=resolving_to("93.184.216.34")
    )
    assert (target.host, target.port, target.scheme) == ("hooks.example.com", 8443, "https")
    assert target.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert target.url_at(target.addresses[0]) == "https://93.184.216.34:8443/fax?x=1"


async def test_the_platform_can_allow_a_network() -> None:
    allowed = parse_networks(["127.0.0.0/8", "fd00::/8"])
    target = await check_url("http://127.0.0.1:9000/hook", allowed)
    assert target.url_at(target.addresses[0]) == "http://127.0.0.1:9000/hook"
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.0.0.1"), allowed) == "a private address"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/x", "scheme"),
        ("example.com/hook", "scheme"),
        ("https://user:pw@example.com/x", "credentials"),
        ("https:///nohost", "malformed"),
        ("https://example.com/x#frag", "malformed"),
        ("https://example.com:99999/x", "malformed"),
        ("https://example.com/" + "a" * 2001, "too_long"),
    ],
)
async def test_urls_a_webhook_cannot_use(url: str, code: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        await check_url(url, resolver=resolving_to("93.184.216.34"))
    assert refused.value.code == code


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UrlRefused, match="cannot be resolved") as refused:
        await check_url("https://nowhere.invalid/x", resolver=fails)
    assert refused.value.code == "unresolvable"


def test_bad_allowed_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        parse_networks(["10.0.0.0/33"])
