"""Locating a carrier (RFC 3263) against a real DNS server: dnsmasq on loopback.

The carrier ``carrier.test`` publishes NAPTR records (TCP preferred over UDP), SRV
records (two UDP servers at different priorities, weights within one) and A records.
Our resolver must order the hops as the RFCs say, keep the carrier's name for TLS, and
the user agent must hand an INVITE to the next server when one answers 503 (a SIPp) or
cannot be reached (a TCP port nobody listens on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.resolve import ResolveError, Resolver
from faxbox.fax.sip.transport import Hop
from faxbox.fax.sip.ua import UserAgent
from tests.peers.dnsmasq import running_dnsmasq
from tests.peers.sipp import reply, scenario, start_sipp
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CLOSED_TCP = free_port()  # nothing listens here: a connection is refused at once


@pytest.fixture
async def callee() -> AsyncIterator[UserAgent]:
    ua = await UserAgent.start(pace=0, user="callee", transports=("UDP", "TCP"))

    async def answer(incoming: IncomingCall) -> None:
        await incoming.answer()

    ua.listen(answer)
    yield ua
    await ua.close()


def records(sipp_port: int, callee_port: int) -> list[str]:
    return [
        # NAPTR: TCP first (order 10), UDP second (order 20).
        "--naptr-record=carrier.test,10,10,S,SIP+D2T,,_sip._tcp.carrier.test",
        "--naptr-record=carrier.test,20,10,S,SIP+D2U,,_sip._udp.carrier.test",
        # TCP: one server, down.
        f"--srv-host=_sip._tcp.carrier.test,down.carrier.test,{CLOSED_TCP},10,10",
        # UDP: SIPp (503) at priority 10, the callee at priority 20.
        f"--srv-host=_sip._udp.carrier.test,busy.carrier.test,{sipp_port},10,10",
        f"--srv-host=_sip._udp.carrier.test,good.carrier.test,{callee_port},20,10",
        "--host-record=down.carrier.test,127.0.0.1",
        "--host-record=busy.carrier.test,127.0.0.1",
        "--host-record=good.carrier.test,127.0.0.1",
        # Weights: two servers at one priority, for the ordering test.
        "--srv-host=_sip._udp.weights.test,a.weights.test,5071,10,1000",
        "--srv-host=_sip._udp.weights.test,b.weights.test,5072,10,0",
        "--host-record=a.weights.test,127.0.0.2",
        "--host-record=b.weights.test,127.0.0.3",
        # TLS: the name to verify is the carrier's, not the SRV target's (RFC 5922).
        "--srv-host=_sips._tcp.secure.test,sbc.secure.test,5061,10,10",
        "--host-record=sbc.secure.test,127.0.0.4",
        # No SRV at all: the A record, port 5060, UDP.
        "--host-record=plain.test,127.0.0.5",
    ]


async def test_naptr_srv_and_a_records_order_the_hops(tmp_path: Path) -> None:
    with running_dnsmasq(tmp_path / "dns", records(5091, 5092)) as server:
        resolver = Resolver([server])
        hops = await resolver.hops("sip:carrier.test")
        assert [(h.transport, h.port) for h in hops] == [
            ("TCP", CLOSED_TCP),
            ("UDP", 5091),  # priority 10 before 20
            ("UDP", 5092),
        ]
        assert {h.host for h in hops} == {"127.0.0.1"}
        # A transport= parameter picks the SRV records of that transport.
        [tcp] = await resolver.hops("sip:carrier.test;transport=tcp")
        assert (tcp.transport, tcp.port) == ("TCP", CLOSED_TCP)
        # A weight of 0 next to 1000 comes last (RFC 2782), every time.
        for _ in range(5):
            fresh = Resolver([server])
            assert [h.host for h in await fresh.hops("sip:weights.test")] == [
                "127.0.0.2",
                "127.0.0.3",
            ]
        [secure] = await resolver.hops("sips:secure.test")
        assert (secure.transport, secure.host, secure.port) == ("TLS", "127.0.0.4", 5061)
        assert secure.tls_name == "secure.test"
        [plain] = await resolver.hops("sip:plain.test")
        assert (plain.transport, plain.host, plain.port) == ("UDP", "127.0.0.5", 5060)
        [explicit] = await resolver.hops("sip:good.carrier.test:5999")
        assert explicit == Hop("UDP", "127.0.0.1", 5999)
        # A resolver limited to UDP never offers the TCP hop.
        udp_only = Resolver([server], transports=("UDP",))
        assert [h.transport for h in await udp_only.hops("sip:carrier.test")] == ["UDP", "UDP"]
        with pytest.raises(ResolveError):
            await resolver.hops("sip:nowhere.test")


async def test_invite_goes_past_a_dead_and_a_503_server_to_the_third(
    callee: UserAgent, tmp_path: Path
) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "a busy server",
            '<recv request="INVITE"/>'
            + reply("503 Service Unavailable", extra="Retry-After: 10")
            + '<recv request="ACK"/>',
        ),
    )
    with running_dnsmasq(tmp_path / "dns", records(sipp.port, callee.port)) as server:
        caller = await UserAgent.start(
            pace=0, transports=("UDP", "TCP"), resolver=Resolver([server])
        )
        try:
            call = await caller.dial("sip:carrier.test", "+12125550100", "+12125550199")
            assert call.next_hop == Hop("UDP", "127.0.0.1", callee.port)
            await call.hangup()
        finally:
            await caller.close()
    await sipp.assert_passed()
