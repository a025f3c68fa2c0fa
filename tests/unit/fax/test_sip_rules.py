"""The SIP stack's pure rules: route sets, session-timer negotiation, port ranges, carrier
URIs, 3xx ordering, registration expiry."""

from __future__ import annotations

import pytest

from faxbox.fax.sip.carrier import carrier_uri
from faxbox.fax.sip.message import SipRequest, SipResponse
from faxbox.fax.sip.outgoing import CallFailed, redirect_targets
from faxbox.fax.sip.ports import NoFreePort, PortRange
from faxbox.fax.sip.registration import granted_expiry, refresh_after
from faxbox.fax.sip.routing import RouteSet
from faxbox.fax.sip.session_timer import (
    IntervalTooSmall,
    SessionTimerSettings,
    uac_negotiated,
    uas_negotiate,
)
from faxbox.shared.store import Carrier


def test_a_callers_route_set_is_the_record_route_reversed_and_loose() -> None:
    response = SipResponse()
    response.headers.add("Record-Route", "<sip:p2.example;lr>, <sip:p1.example;lr>")
    routes = RouteSet.from_record_route(response, reverse=True)
    request = SipRequest(method="BYE")
    routes.apply(request, "sip:far@192.0.2.1:5060")
    assert request.uri == "sip:far@192.0.2.1:5060"
    assert request.headers.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert routes.next_hop_uri("sip:far@192.0.2.1") == "sip:p1.example;lr"


def test_a_strict_router_gets_the_request_uri_and_the_target_last() -> None:
    routes = RouteSet(["<sip:old.example>", "<sip:p2.example;lr>"])
    request = SipRequest(method="BYE")
    routes.apply(request, "sip:far@192.0.2.1")
    assert request.uri == "sip:old.example"
    assert request.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:far@192.0.2.1>"]


def test_an_outbound_proxy_is_a_loose_preloaded_route() -> None:
    routes = RouteSet.preloaded("sip:sbc.example:5070;transport=tcp")
    assert routes.routes == ["<sip:sbc.example:5070;transport=tcp;lr>"]
    assert not RouteSet.preloaded(None)


def _request(**headers: str) -> SipRequest:
    request = SipRequest(method="INVITE")
    for name, value in headers.items():
        request.headers.add(name.replace("_", "-"), value)
    return request


def test_session_timer_negotiation_as_the_callee() -> None:
    ours = SessionTimerSettings(expires_s=1800, min_se_s=90)
    with pytest.raises(IntervalTooSmall) as small:
        uas_negotiate(_request(Session_Expires="60", Supported="timer"), ours)
    assert small.value.min_se == 90
    negotiated, headers = uas_negotiate(_request(Session_Expires="120", Supported="timer"), ours)
    assert negotiated is not None
    assert (negotiated.interval_s, negotiated.we_refresh) == (120, False)
    assert ("Require", "timer") in headers
    assert ("Session-Expires", "120;refresher=uac") in headers
    # A caller without the extension: we refresh.
    negotiated, headers = uas_negotiate(_request(Session_Expires="300"), ours)
    assert negotiated is not None
    assert negotiated.we_refresh
    assert headers == [("Session-Expires", "300;refresher=uas")]
    assert uas_negotiate(_request(), ours) == (None, [])
    assert negotiated.refresh_after_s == 150
    assert negotiated.expire_after_s == 300 - 32


def test_session_timer_from_the_answer() -> None:
    response = SipResponse()
    response.headers.add("Session-Expires", "90;refresher=uas")
    negotiated = uac_negotiated(response)
    assert negotiated is not None
    assert (negotiated.interval_s, negotiated.we_refresh) == (90, False)
    assert uac_negotiated(SipResponse()) is None


async def test_port_range_hands_out_and_takes_back() -> None:
    ports = PortRange(40000, 40003)
    bound: list[int] = []

    async def bind(port: int) -> None:
        bound.append(port)

    assert await ports.bind(bind, even=True) == 40000
    assert await ports.bind(bind, even=True) == 40002
    with pytest.raises(NoFreePort):
        await ports.bind(bind, even=True)
    ports.release(40000)
    assert await ports.bind(bind, even=True) == 40000
    assert ports.in_use == 2
    with pytest.raises(ValueError, match="LOW-HIGH"):
        PortRange.parse("20000")
    assert PortRange.parse("20000-20999").high == 20999


def test_carrier_uris() -> None:
    def carrier(**fields: object) -> Carrier:
        return Carrier.model_validate({"name": "c", **fields})

    assert carrier_uri(carrier(sip_host="192.0.2.1")) == "sip:192.0.2.1:5060"
    assert carrier_uri(carrier(sip_host="192.0.2.1", sip_port=5080, sip_transport="tcp")) == (
        "sip:192.0.2.1:5080;transport=tcp"
    )
    # A name without a port is looked up (RFC 3263 SRV): no port in the URI.
    assert carrier_uri(carrier(sip_host="sip.carrier.example", sip_transport="tls")) == (
        "sip:sip.carrier.example;transport=tls"
    )
    assert carrier_uri(carrier(sip_uri="sips:trunk.example")) == "sips:trunk.example"


def test_redirect_targets_by_q() -> None:
    response = SipResponse(status=302)
    response.headers.add("Contact", "<sip:a@192.0.2.1>;q=0.1, <sip:b@192.0.2.2>;q=0.9")
    response.headers.add("Contact", "<sip:c@192.0.2.3>")
    assert redirect_targets(response) == ["sip:c@192.0.2.3", "sip:b@192.0.2.2", "sip:a@192.0.2.1"]


def test_which_failures_another_carrier_may_fix() -> None:
    assert CallFailed(503, "Service Unavailable").carrier_trouble
    assert CallFailed(408, "Request Timeout", local=True).carrier_trouble
    assert not CallFailed(408, "No answer", gave_up=True).carrier_trouble
    assert not CallFailed(486, "Busy Here").carrier_trouble
    assert not CallFailed(404, "Not Found").carrier_trouble


def test_registration_expiry_granted_and_refresh() -> None:
    response = SipResponse()
    response.headers.add("Contact", "<sip:fax@192.0.2.9:5080;transport=tcp>;expires=120")
    response.headers.add("Contact", "<sip:other@192.0.2.8>;expires=3600")
    assert granted_expiry(response, "sip:fax@192.0.2.9:5080;transport=tcp", 600) == 120
    assert granted_expiry(SipResponse(), "sip:fax@192.0.2.9", 600) == 600
    assert refresh_after(120) == 60
    assert refresh_after(3600) == 3540
