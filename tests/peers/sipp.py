"""SIPp (Debian ``sip-tester``) as a scripted SIP peer: scenarios, start, result.

Each test writes a SIPp scenario (``scenario``, ``reply`` and the SDP/BYE pieces below
build them), runs ``sipp`` on a free port of 127.0.0.1 for one call, and requires SIPp
to exit 0 (every message as the scenario expects, in order, no unexpected ones).
Without ``/usr/bin/sipp`` the tests skip, or fail when CI is set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

SIPP_TIMEOUT_S = 20


def sipp_binary() -> str:
    path = shutil.which("sipp") or ("/usr/bin/sipp" if os.path.exists("/usr/bin/sipp") else None)
    if path is None:
        message = "SIPp is not installed (Debian package sip-tester)"
        if os.environ.get("CI") or os.environ.get("FAXBOX_REQUIRE_SERVERS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sipp:
    process: asyncio.subprocess.Process
    port: int
    workdir: Path

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    async def result(self) -> int:
        """Wait for SIPp to finish its one call; its exit status (0: all as scripted)."""
        try:
            await asyncio.wait_for(self.process.wait(), SIPP_TIMEOUT_S + 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return self.process.returncode if self.process.returncode is not None else -1

    def errors(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in self.workdir.glob("*_errors.log")
        )

    async def assert_passed(self) -> None:
        rc = await self.result()
        assert rc == 0, f"sipp exit status {rc}\n{self.errors()}"


async def start_sipp(workdir: Path, scenario: str, *args: str) -> Sipp:
    """SIPp with ``scenario`` (XML text) on a free port, one call, errors traced."""
    binary = sipp_binary()
    port = free_udp_port()
    path = workdir / "scenario.xml"
    path.write_text(scenario)
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(free_udp_port()),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-trace_err",
        cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.2)  # let it bind; our INVITE retransmissions cover the rest
    return Sipp(process, port, workdir)


def scenario(name: str, body: str) -> str:
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="{name}">\n{body}\n</scenario>\n'


def reply(
    status: str, *, tag: bool = True, sdp: str = "", extra: str = "", retrans: bool | None = None
) -> str:
    """A response to the last request, with SIPp's keywords.

    Final responses to INVITE are retransmitted by SIPp until the next message arrives
    (the ACK); ``retrans=False`` for those to other requests.
    """
    if retrans is None:
        retrans = int(status[:3]) >= 200
    to_tag = ";tag=[pid]SIPpTag01[call_number]" if tag else ""
    content = "Content-Type: application/sdp\n" if sdp else ""
    extra = f"{extra}\n" if extra else ""
    return f"""
  <send{' retrans="500"' if retrans else ""}><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:]{to_tag}
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
{extra}{content}Content-Length: [len]

{sdp}]]></send>"""


AUDIO_SDP = """v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 0
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
"""

T38_SDP = """v=0
o=sipp 1 2 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=image [media_port] udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:1000
a=T38FaxMaxDatagram:200
a=T38FaxUdpEC:t38UDPRedundancy
"""

SIPP_BYE = """
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [last_From:]
[last_Call-ID:]
CSeq: 100 BYE
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>"""

RECV_BYE = """
  <recv request="BYE"/>""" + reply("200 OK", retrans=False)

ANSWER = (
    """
  <recv request="INVITE"/>"""
    + reply("180 Ringing")
    + reply("200 OK", sdp=AUDIO_SDP)
    + """
  <recv request="ACK" crlf="true"/>"""
)
