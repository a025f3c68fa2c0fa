"""Faxbox through Kamailio, a carrier's proxy, registrar and SBC nobody here wrote.

Kamailio (``tests.peers.kamailio``) authenticates our REGISTER and INVITEs with digest
against its own subscriber table, record-routes every dialog and relays between its
customer side (us, over UDP, TCP or TLS with a certificate made at start-up) and its
network side (pstn-sim, over UDP). For each transport we register, send a 3-page fax
over G.711 and over T.38 to pstn-sim's receiving fax machine, and receive one that
pstn-sim sends to one of our DIDs, which Kamailio delivers to our registered contact.
Every page must arrive pixel-identical. TLS verification stays on (the test's CA is
the one trusted), and a UA that trusts only the system's CAs must fail to register.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from faxbox.fax.line import LineSettings, receive, send
from faxbox.fax.session import CallSettings
from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, parse_message
from faxbox.fax.sip.registration import Registration, RegistrationState
from faxbox.fax.sip.stream import TlsSettings
from faxbox.fax.sip.ua import CallFailed, UserAgent
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings
from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
from tests.peers.kamailio import Kamailio, running_kamailio

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 20.0
USER, PASSWORD = "faxbox", "kamailio-test-secret"
RECEIVE = "+12125550101"  # pstn-sim answers and receives
OUR_DID = "+16465550123"  # Kamailio sends calls to it to our registered contact
CALLER = "+12125550100"
TRANSPORTS = ("udp", "tcp", "tls")


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "three.tif"
    return save_fax_tiff(path, [text_page(n) for n in (1, 2, 3)])


@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSimulator]:
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=PACE,
        pstn_sim_data_dir=tmp_path_factory.mktemp("pstn-sim"),
        pstn_sim_answer_timeout_s=10,
    )
    async with running(settings) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory, sim: RunningSimulator) -> Iterator[Kamailio]:
    assert sim.ua is not None
    with running_kamailio(
        tmp_path_factory.mktemp("kamailio"), pstn=sim.ua.address, users={USER: PASSWORD}
    ) as k:
        yield k


@dataclass
class Registered:
    ua: UserAgent
    registration: Registration
    transport: str
    incoming: asyncio.Queue[tuple[IncomingCall, Path, object]]


@pytest.fixture(params=TRANSPORTS)
async def registered(
    request: pytest.FixtureRequest, kamailio: Kamailio, tmp_path: Path
) -> AsyncIterator[Registered]:
    transport: str = request.param
    ua = await UserAgent.start(
        transports=("UDP", "TCP", "TLS"),
        tls=TlsSettings(ca_file=kamailio.certificates.ca_file),
        pace=PACE,
        user=USER,
    )
    registration = Registration(
        ua,
        kamailio.uri(transport),
        USER,
        credentials=Credentials(USER, PASSWORD),
        domain=kamailio.domain,
        expires_s=60,
    )
    got: asyncio.Queue[tuple[IncomingCall, Path, object]] = asyncio.Queue()

    async def on_call(incoming: IncomingCall) -> None:
        incoming.ring()
        call = await incoming.answer()
        path = tmp_path / f"received-{incoming.request.call_id[:8]}.tif"
        result = await receive(call, CallSettings(file=path, local_identity="FAXBOX"))
        got.put_nowait((incoming, path, result))

    ua.listen(on_call)
    registration.start()
    assert await registration.wait_registered(10), (
        registration.status,
        kamailio.log_text()[-2000:],
    )
    yield Registered(ua, registration, transport, got)
    await registration.stop()
    assert registration.status.state is RegistrationState.UNREGISTERED
    await ua.close()


@pytest.mark.parametrize("media", ["g711", "t38"])
async def test_fax_out_through_kamailio(
    registered: Registered,
    kamailio: Kamailio,
    sim: RunningSimulator,
    three_pages: Path,
    media: str,
) -> None:
    sim.calls.reset()
    call = await registered.ua.dial(
        kamailio.uri(registered.transport),
        CALLER,
        RECEIVE,
        credentials=Credentials(USER, PASSWORD),
        from_domain=kamailio.domain,
        answer_timeout=10,
    )
    # Kamailio record-routed the dialog: in-dialog requests go back through it.
    assert call.route_set.routes, "no Record-Route from Kamailio"
    assert call.next_hop.transport == registered.transport.upper()
    result = await send(
        call,
        CallSettings(file=three_pages, local_identity="FAXBOX"),
        LineSettings(request_t38=media == "t38"),
    )
    assert result.fax.success, result.fax
    assert result.fax.pages_transferred == 3
    assert result.media == ("t38" if media == "t38" else "audio")
    [record] = await asyncio.wait_for(sim.calls.wait_for(RECEIVE, count=1), 15)
    assert record.received_tiff is not None
    assert_pages_identical(three_pages, Path(record.received_tiff))
    # The BYE went through Kamailio too (the route set), and pstn-sim saw it end.
    assert record.pages_received == 3


async def test_fax_in_on_the_registered_contact(
    registered: Registered, kamailio: Kamailio, sim: RunningSimulator, three_pages: Path
) -> None:
    media: Literal["g711", "t38"] = "g711" if registered.transport == "udp" else "t38"
    record = sim.originate(CALLER, OUR_DID, three_pages, media=media, uri=kamailio.network_uri)
    incoming, path, _ = await asyncio.wait_for(registered.incoming.get(), 60)
    # Behind the registrar the Request-URI is our contact; the DID is in To.
    assert incoming.request_uri_number == USER
    assert incoming.to_header_number == OUR_DID
    assert incoming.called_numbers == [USER, OUR_DID]
    assert incoming.hop.transport == registered.transport.upper()
    done = await asyncio.wait_for(sim.calls.wait(record.id), 30)
    assert done.outcome is not None
    assert done.outcome.success, done
    assert_pages_identical(three_pages, path)


async def test_tls_verification_is_on_by_default(kamailio: Kamailio) -> None:
    # Trusting only the system's CAs, Kamailio's certificate (from our test CA) is refused.
    ua = await UserAgent.start(transports=("UDP", "TLS"))
    try:
        registration = Registration(
            ua,
            kamailio.uri("tls"),
            USER,
            credentials=Credentials(USER, PASSWORD),
            domain=kamailio.domain,
            retry_min_s=30,
        )
        registration.start()
        assert not await registration.wait_registered(3)
        assert registration.status.state is RegistrationState.FAILED
        assert registration.status.last_status == 503
        assert "certificate" in registration.status.last_reason.lower()
        await registration.stop()
    finally:
        await ua.close()


async def test_large_request_over_udp_moves_to_tcp(kamailio: Kamailio) -> None:
    # RFC 3261 §18.1.1: a request over 1300 bytes goes over TCP when the UA has it.
    ua = await UserAgent.start(transports=("UDP", "TCP"), pace=PACE)
    try:
        with pytest.raises(CallFailed) as failed:
            await ua.dial(
                kamailio.uri("udp"),
                CALLER,
                RECEIVE,
                display_name="F" * 1200,
                answer_timeout=5,
            )
        assert failed.value.status == 407  # Kamailio answered the INVITE: it got there
        [invite] = [
            m
            for m in map(parse_message, ua.sent)
            if isinstance(m, SipRequest) and m.method == "INVITE"
        ]
        assert invite.top_via.transport == "TCP"
        assert len(invite.serialize()) > 1300
        assert f"REQ INVITE sip:{RECEIVE}@127.0.0.1:{kamailio.port}" in kamailio.log_text()
        assert "/tcp on" in kamailio.log_text()
    finally:
        await ua.close()


async def test_an_outbound_proxy_carries_the_call(
    kamailio: Kamailio, sim: RunningSimulator
) -> None:
    # The INVITE names pstn-sim; it goes to Kamailio (a preloaded Route), and the
    # dialog's requests follow Kamailio's Record-Route, the BYE included.
    ua = await UserAgent.start(transports=("UDP", "TCP"), pace=PACE)
    try:
        call = await ua.dial(
            sim.sip_uri,
            CALLER,
            RECEIVE,
            proxy=kamailio.uri("tcp"),
            credentials=Credentials(USER, PASSWORD),
            from_domain=kamailio.domain,
            answer_timeout=10,
        )
        [invite] = [
            m
            for m in map(parse_message, ua.sent)
            if isinstance(m, SipRequest)
            and m.method == "INVITE"
            and m.headers.get("Proxy-Authorization")
        ]
        assert invite.uri.endswith(sim.sip_uri.removeprefix("sip:"))
        assert invite.headers.get_all("Route")[0].startswith(f"<sip:127.0.0.1:{kamailio.port}")
        assert invite.top_via.transport == "TCP"
        assert call.route_set.routes
        assert call.next_hop.transport == "TCP"
        await call.hangup()
        [bye] = [
            m
            for m in map(parse_message, ua.sent)
            if isinstance(m, SipRequest) and m.method == "BYE"
        ]
        assert bye.headers.get_all("Route")
    finally:
        await ua.close()
