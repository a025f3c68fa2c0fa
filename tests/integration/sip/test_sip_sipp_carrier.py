"""Message-level carrier behaviour against SIPp, where exact messages matter.

- 302: followed to the Contact (another user agent answers), and not followed past
  ``max_redirects``;
- 488 to an INVITE that offered T.38 beside G.711: sent again with G.711 only;
- 422 (RFC 4028): sent again with the far end's Min-SE as Session-Expires;
- a reliable 180 (``Require: 100rel``): PRACKed with the right RAck (SIPp checks it);
- a CANCEL that arrives after our 200: the call goes on (RFC 3261 §9.2);
- an INVITE requiring an extension we lack: 420 with Unsupported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, SipResponse, parse_message
from faxbox.fax.sip.sdp import SessionDescription
from faxbox.fax.sip.ua import CallFailed, UserAgent
from tests.peers.sipp import AUDIO_SDP, reply, scenario, start_sipp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = await UserAgent.start(pace=0, t1=0.1)
    yield agent
    await agent.close()


def invites(ua: UserAgent) -> list[SipRequest]:
    return [
        m for m in map(parse_message, ua.sent) if isinstance(m, SipRequest) and m.method == "INVITE"
    ]


ACK = '<recv request="ACK" crlf="true"/>'
BYE = '<recv request="BYE"/>' + reply("200 OK", retrans=False)


def moved_to(port: int) -> str:
    """A 302 whose only Contact is the user agent on ``port``."""
    return f"""
  <send retrans="500"><![CDATA[
SIP/2.0 302 Moved Temporarily
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:+12125550199@127.0.0.1:{port}>;q=0.9
Content-Length: 0

]]></send>"""


async def test_302_is_followed_to_the_contact_and_bounded(ua: UserAgent, tmp_path: Path) -> None:
    target = await UserAgent.start(pace=0, user="target")

    async def answer(incoming: IncomingCall) -> None:
        await incoming.answer()

    target.listen(answer)
    try:
        redirect = scenario("redirect", '<recv request="INVITE"/>' + moved_to(target.port) + ACK)
        sipp = await start_sipp(tmp_path, redirect)
        call = await ua.dial(sipp.uri, "100", "200")
        await sipp.assert_passed()
        assert call.remote_target.endswith(f"@127.0.0.1:{target.port}")
        first, second = invites(ua)
        assert second.uri == f"sip:+12125550199@127.0.0.1:{target.port}"
        assert first.call_id == second.call_id
        await call.hangup()

        (tmp_path / "again").mkdir()
        sipp = await start_sipp(tmp_path / "again", redirect)
        with pytest.raises(CallFailed) as failed:
            await ua.dial(sipp.uri, "100", "200", max_redirects=0)
        assert failed.value.status == 302
        await sipp.assert_passed()
    finally:
        await target.close()


async def test_488_to_t38_in_the_invite_falls_back_to_g711(ua: UserAgent, tmp_path: Path) -> None:
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "no T.38 here",
            '<recv request="INVITE"/>'
            + reply("488 Not Acceptable Here")
            + ACK
            + '<recv request="INVITE"/>'
            + reply("200 OK", sdp=AUDIO_SDP)
            + ACK
            + BYE,
        ),
    )
    ua.pace = 10  # T.38 is offered only on a clocked line
    call = await ua.dial(sipp.uri, "100", "200", offer_t38=True)
    assert call.media_kind == "audio"
    first, second = invites(ua)
    assert [m.media for m in SessionDescription.parse(first.body).media] == ["audio", "image"]
    assert [m.media for m in SessionDescription.parse(second.body).media] == ["audio"]
    assert second.cseq.number == first.cseq.number + 1
    await call.hangup()
    await sipp.assert_passed()


async def test_422_is_answered_with_the_min_se_asked_for(ua: UserAgent, tmp_path: Path) -> None:
    check = """
    <action>
      <ereg regexp="1800" search_in="hdr" header="Session-Expires:" check_it="true"
            assign_to="se"/>
      <log message="Session-Expires [$se]"/>
    </action>"""
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "interval too small",
            '<recv request="INVITE"/>'
            + reply("422 Session Interval Too Small", extra="Min-SE: 1800")
            + ACK
            + f'<recv request="INVITE">{check}</recv>'
            + reply("200 OK", sdp=AUDIO_SDP, extra="Session-Expires: 1800;refresher=uac")
            + ACK
            + BYE,
        ),
    )
    call = await ua.dial(sipp.uri, "100", "200")
    assert call.timer is not None
    assert (call.timer.interval_s, call.timer.we_refresh) == (1800, True)
    await call.hangup()
    await sipp.assert_passed()


async def test_a_reliable_180_is_pracked(ua: UserAgent, tmp_path: Path) -> None:
    rack = """
    <action>
      <ereg regexp="1 1 INVITE" search_in="hdr" header="RAck:" check_it="true"
            assign_to="rack"/>
      <log message="RAck [$rack]"/>
    </action>"""
    # The 200 to the INVITE comes after the PRACK: its Via and CSeq are the INVITE's,
    # kept from it (SIPp's [last_*] are the PRACK's by then).
    keep = """
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="cseq"/>
    </action>"""
    ok = f"""
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
Via:[$via]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq:[$cseq]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{AUDIO_SDP}]]></send>"""
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "100rel",
            f'<recv request="INVITE">{keep}</recv>'
            + reply("180 Ringing", extra="Require: 100rel\nRSeq: 1", retrans=False)
            + f'<recv request="PRACK">{rack}</recv>'
            + reply("200 OK", retrans=False)
            + ok
            + ACK
            + BYE,
        ),
    )
    call = await ua.dial(sipp.uri, "100", "200")
    [prack] = [
        m for m in map(parse_message, ua.sent) if isinstance(m, SipRequest) and m.method == "PRACK"
    ]
    assert prack.headers.get("RAck") == f"1 {invites(ua)[0].cseq.number} INVITE"
    await call.hangup()
    await sipp.assert_passed()


UAC_HEAD = """
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
Call-ID: [call_id]
Max-Forwards: 70
"""


async def test_a_cancel_after_our_200_leaves_the_call_up(ua: UserAgent, tmp_path: Path) -> None:
    answered: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        answered.put_nowait(incoming)

    ua.listen(handler)
    uac = scenario(
        "late CANCEL",
        f"""
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
To: <sip:[service]@[remote_ip]:[remote_port]>
CSeq: 1 INVITE{UAC_HEAD}Contact: <sip:sipp@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{AUDIO_SDP}]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to"/>
    </action>
  </recv>
  <send><![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
To: <sip:[service]@[remote_ip]:[remote_port]>
CSeq: 1 CANCEL{UAC_HEAD}Content-Length: 0

]]></send>
  <recv response="200"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
To:[$to]
CSeq: 1 ACK{UAC_HEAD}Content-Length: 0

]]></send>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
To:[$to]
CSeq: 2 BYE{UAC_HEAD}Content-Length: 0

]]></send>
  <recv response="200"/>""",
    )
    sipp = await start_sipp(tmp_path, uac, f"127.0.0.1:{ua.port}", "-s", "200")
    incoming = await asyncio.wait_for(answered.get(), 10)
    call = incoming.call
    assert call is not None
    await asyncio.wait_for(call.ended.wait(), 10)
    assert call.remote_hung_up  # ended by the BYE, not by the CANCEL
    await sipp.assert_passed()
    responses = [m for m in map(parse_message, ua.sent) if isinstance(m, SipResponse)]
    assert not [r for r in responses if r.status == 487]


async def test_an_unsupported_required_extension_gets_420(ua: UserAgent, tmp_path: Path) -> None:
    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()

    ua.listen(handler)
    uac = scenario(
        "Require: foo",
        f"""
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
To: <sip:[service]@[remote_ip]:[remote_port]>
CSeq: 1 INVITE{UAC_HEAD}Contact: <sip:sipp@[local_ip]:[local_port]>
Require: foo
Content-Type: application/sdp
Content-Length: [len]

{AUDIO_SDP}]]></send>
  <recv response="420">
    <action>
      <ereg regexp="foo" search_in="hdr" header="Unsupported:" check_it="true" assign_to="u"/>
      <log message="unsupported: [$u]"/>
    </action>
  </recv>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-2]
[last_To:]
CSeq: 1 ACK{UAC_HEAD}Content-Length: 0

]]></send>""",
    )
    sipp = await start_sipp(tmp_path, uac, f"127.0.0.1:{ua.port}", "-s", "200")
    await sipp.assert_passed()
