"""Our user agent against SIPp (Debian ``sip-tester``), an independent SIP implementation.

Each test writes a SIPp scenario, runs ``sipp`` on a free port of 127.0.0.1 for one call,
and requires SIPp to exit 0 (every message as the scenario expects, in order, no
unexpected ones). Without ``/usr/bin/sipp`` the tests skip, or fail when CI is set.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.fax.sip.dialog import EventKind
from faxbox.fax.sip.digest import Credentials, parse_auth_params
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, parse_message
from faxbox.fax.sip.sdp import PCMA
from faxbox.fax.sip.ua import CallFailed, FailureKind, UserAgent
from tests.peers.sipp import (
    ANSWER,
    AUDIO_SDP,
    RECV_BYE,
    SIPP_BYE,
    SIPP_TIMEOUT_S,
    T38_SDP,
    Sipp,
    free_udp_port,
    reply,
    scenario,
    sipp_binary,
    start_sipp,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    # A short T1: if SIPp stopped early, our INVITE gives up after 64·T1 = 6.4 s.
    agent = await UserAgent.start(pace=0, t1=0.1)
    try:
        yield agent
    finally:
        await agent.close()


async def test_sipp_answers_and_hangs_up(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario("answer, BYE", ANSWER + '\n  <pause milliseconds="200"/>' + SIPP_BYE),
    )
    progress: list[int] = []
    call = await ua.dial(
        sipp.uri, "+4930100", "+4930200", on_progress=lambda s, _r: progress.append(s)
    )
    assert progress == [180]
    assert call.payload_type == PCMA  # SIPp's preference in its answer
    await asyncio.wait_for(call.ended.wait(), 10)
    assert call.remote_hung_up
    assert (await call.events.get()).kind is EventKind.REMOTE_HANGUP
    await sipp.assert_passed()
    invite = next(
        m for m in map(parse_message, ua.sent) if isinstance(m, SipRequest) and m.method == "INVITE"
    )
    assert invite.uri == f"sip:+4930200@127.0.0.1:{sipp.port}"
    assert invite.from_.uri == "sip:+4930100@127.0.0.1"


async def test_sipp_answers_and_we_hang_up(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(tmp_path, scenario("answer, receive BYE", ANSWER + RECV_BYE))
    call = await ua.dial(sipp.uri, "100", "200")
    assert not call.is_ended
    await call.hangup()
    await sipp.assert_passed()
    assert not call.remote_hung_up


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("486 Busy Here", FailureKind.BUSY),
        ("404 Not Found", FailureKind.BAD_NUMBER),
        ("480 Temporarily Unavailable", FailureKind.NO_ANSWER),
        ("503 Service Unavailable", FailureKind.UNAVAILABLE),
    ],
)
async def test_sipp_rejects(tmp_path: Path, ua: UserAgent, status: str, kind: FailureKind) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "reject",
            '\n  <recv request="INVITE"/>'
            + reply("100 Trying", tag=False)
            + reply(status)
            + '\n  <recv request="ACK"/>',
        ),
    )
    with pytest.raises(CallFailed) as failed:
        await ua.dial(sipp.uri, "100", "200")
    assert failed.value.status == int(status[:3])
    assert failed.value.reason == status[4:]
    assert failed.value.kind is kind
    await sipp.assert_passed()


CHALLENGE_401 = (
    'WWW-Authenticate: Digest realm="faxbox.test", nonce="4f1a2b3c4d5e6f", qop="auth", '
    "algorithm=MD5"
)

AUTH_401 = (
    '\n  <recv request="INVITE"/>'
    + reply("401 Unauthorized", extra=CHALLENGE_401)
    + """
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="alice" password="s3cret"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="goodauth"/>
  <nop hide="true" next="badauth"/>
  <label id="goodauth"/>"""
    + reply("200 OK", sdp=AUDIO_SDP)
    + '\n  <recv request="ACK"/>'
    + RECV_BYE
    + '\n  <nop hide="true" next="end"/>\n  <label id="badauth"/>'
    + reply("403 Forbidden")
    + '\n  <recv request="ACK"/>\n  <label id="end"/>'
)


async def test_sipp_verifies_our_digest_answer_to_401(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(tmp_path, scenario("401 digest", AUTH_401))
    call = await ua.dial(sipp.uri, "100", "200", credentials=Credentials("alice", "s3cret"))
    await call.hangup()
    await sipp.assert_passed()
    invites = [
        m for m in map(parse_message, ua.sent) if isinstance(m, SipRequest) and m.method == "INVITE"
    ]
    assert [i.cseq.number for i in invites] == [1, 2]
    assert invites[0].top_via.branch != invites[1].top_via.branch
    assert "Authorization" in invites[1].headers


async def test_sipp_refuses_a_wrong_password(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(tmp_path, scenario("401 digest", AUTH_401))
    with pytest.raises(CallFailed) as failed:
        await ua.dial(sipp.uri, "100", "200", credentials=Credentials("alice", "wrong"))
    assert failed.value.status == 403
    assert failed.value.kind is FailureKind.REJECTED
    await sipp.assert_passed()


async def test_401_without_credentials_fails(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "401 only",
            '\n  <recv request="INVITE"/>'
            + reply("401 Unauthorized", extra=CHALLENGE_401)
            + '\n  <recv request="ACK"/>',
        ),
    )
    with pytest.raises(CallFailed) as failed:
        await ua.dial(sipp.uri, "100", "200")
    assert failed.value.status == 401
    await sipp.assert_passed()


async def test_sipp_proxy_challenge_407(tmp_path: Path, ua: UserAgent) -> None:
    # SIPp's <verifyauth> reads Authorization only, so SIPp checks the header is there
    # and well formed, and the digest is recomputed here from RFC 2617 with hashlib.
    nonce = "a1b2c3d4e5"
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "407 digest",
            '\n  <recv request="INVITE"/>'
            + reply(
                "407 Proxy Authentication Required",
                extra=f'Proxy-Authenticate: Digest realm="proxy.test", nonce="{nonce}"',
            )
            + """
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <ereg regexp="Digest username=.bob.*response=.[0-9a-f]{32}" search_in="hdr"
            header="Proxy-Authorization:" check_it="true" assign_to="auth"/>
      <log message="[$auth]"/>
    </action>
  </recv>"""
            + reply("200 OK", sdp=AUDIO_SDP)
            + '\n  <recv request="ACK"/>'
            + RECV_BYE,
        ),
    )
    call = await ua.dial(sipp.uri, "100", "200", credentials=Credentials("bob", "pa55"))
    await call.hangup()
    await sipp.assert_passed()
    invite = [
        m for m in map(parse_message, ua.sent) if isinstance(m, SipRequest) and m.method == "INVITE"
    ][-1]
    value = invite.headers.get("Proxy-Authorization")
    assert value is not None
    assert "Authorization" not in invite.headers
    _, params = parse_auth_params(value)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("bob:proxy.test:pa55")
    ha2 = md5(f"INVITE:{params['uri']}")
    assert params["uri"] == invite.uri
    assert params["response"] == md5(f"{ha1}:{nonce}:{ha2}")


async def test_unanswered_call_is_cancelled(tmp_path: Path) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "ring, CANCEL",
            """
  <recv request="INVITE">
    <action>
      <ereg regexp="([0-9]+)" search_in="hdr" header="CSeq:" assign_to="all,cseq"/>
      <log message="[$all]"/>
    </action>
  </recv>"""
            + reply("180 Ringing")
            + '\n  <recv request="CANCEL"/>'
            + reply("200 OK", retrans=False)
            + """
  <send retrans="500"><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [$cseq] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>""",
        ),
    )
    ua = await UserAgent.start(pace=0, t1=0.1)
    try:
        with pytest.raises(CallFailed) as failed:
            await ua.dial(sipp.uri, "100", "200", answer_timeout=1.0)
        assert failed.value.status == 408
        assert failed.value.kind is FailureKind.NO_ANSWER
        await sipp.assert_passed()
    finally:
        await ua.close()


def _reinvite_scenario(accept: bool) -> str:
    answer = reply("200 OK", sdp=T38_SDP) if accept else reply("488 Not Acceptable Here")
    return scenario(
        "re-INVITE",
        ANSWER
        + """
  <recv request="INVITE">
    <action>
      <ereg regexp="m=image [0-9]+ udptl t38" search_in="body" check_it="true" assign_to="m"/>
      <ereg regexp="T38FaxRateManagement:transferredTCF" search_in="body" check_it="true"
            assign_to="rm"/>
      <ereg regexp="T38FaxUdpEC:t38UDPRedundancy" search_in="body" check_it="true"
            assign_to="ec"/>
      <log message="[$m] [$rm] [$ec]"/>
    </action>
  </recv>"""
        + answer
        + '\n  <recv request="ACK"/>'
        + RECV_BYE,
    )


async def test_sipp_accepts_our_reinvite_to_t38(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(tmp_path, _reinvite_scenario(accept=True))
    call = await ua.dial(sipp.uri, "100", "200")
    assert await call.request_t38()
    assert call.media_kind == "t38"
    assert call.t38_params is not None
    assert call.t38_params.max_datagram == 200
    assert call.udptl is not None
    assert call.udptl.encoder.max_datagram == 200
    assert (await call.events.get()).kind is EventKind.MEDIA_CHANGED
    await call.hangup()
    await sipp.assert_passed()


async def test_sipp_refuses_our_reinvite_with_488(tmp_path: Path, ua: UserAgent) -> None:
    sipp = await start_sipp(tmp_path, _reinvite_scenario(accept=False))
    call = await ua.dial(sipp.uri, "100", "200")
    assert not await call.request_t38()
    assert call.media_kind == "audio"
    event = await call.events.get()
    assert (event.kind, event.status) == (EventKind.REINVITE_REFUSED, 488)
    assert not call.is_ended
    await call.hangup()
    await sipp.assert_passed()


async def test_sipp_calls_us(tmp_path: Path, ua: UserAgent) -> None:
    calls: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        incoming.ring()
        await incoming.answer()
        calls.put_nowait(incoming)

    ua.listen(handler)
    # SIPp's built-in UAC: INVITE, expects 100/180 (optional) and 200, ACK, BYE.
    binary = sipp_binary()
    process = await asyncio.create_subprocess_exec(
        binary,
        "-sn",
        "uac",
        f"127.0.0.1:{ua.port}",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port()),
        "-s",
        "+4930999",
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-trace_err",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    sipp = Sipp(process, 0, tmp_path)
    incoming = await asyncio.wait_for(calls.get(), 10)
    assert incoming.to_number == "+4930999"
    assert incoming.call is not None
    await asyncio.wait_for(incoming.call.ended.wait(), 10)
    assert incoming.call.remote_hung_up
    await sipp.assert_passed()


async def test_sipp_calls_us_and_switches_to_t38(tmp_path: Path, ua: UserAgent) -> None:
    calls: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        calls.put_nowait(incoming)

    ua.listen(handler)
    invite_headers = """
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[routes]
Call-ID: [call_id]
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]
"""
    uac = scenario(
        "UAC with re-INVITE",
        f"""
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
To: <sip:[service]@[remote_ip]:[remote_port]>
CSeq: 1 INVITE{invite_headers}
{AUDIO_SDP}]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="100"/>
  <send retrans="500"><![CDATA[
INVITE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_To:]
CSeq: 2 INVITE{invite_headers}
{T38_SDP}]]></send>
  <recv response="200">
    <action>
      <ereg regexp="m=image [0-9]+ udptl t38" search_in="body" check_it="true" assign_to="m"/>
      <log message="[$m]"/>
    </action>
  </recv>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="100"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>""",
    )
    path = tmp_path / "uac.xml"
    path.write_text(uac)
    process = await asyncio.create_subprocess_exec(
        sipp_binary(),
        f"127.0.0.1:{ua.port}",
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port()),
        "-s",
        "200",
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-trace_err",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    sipp = Sipp(process, 0, tmp_path)
    incoming = await asyncio.wait_for(calls.get(), 10)
    call = incoming.call
    assert call is not None
    event = await asyncio.wait_for(call.events.get(), 10)
    assert (event.kind, event.media) == (EventKind.MEDIA_CHANGED, "t38")
    assert call.t38_params is not None
    assert call.t38_params.max_datagram == 400  # ours, in our answer
    await asyncio.wait_for(call.ended.wait(), 10)
    await sipp.assert_passed()
