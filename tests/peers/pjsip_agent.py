"""A PJSIP user agent (PyPI ``pjsua2-python``) as carrier equipment, driven over stdin.

Run as ``python -m tests.peers.pjsip_agent --port N [options]``; ``tests.peers.pjsip``
starts it and talks to it. It answers calls with G.711 (after a reliable 180 when 100rel
is required), calls out, runs RFC 4028 session timers (it refreshes when it is the
refresher), and on command sends a re-INVITE, optionally with its media moved to a new
RTP port (``PJSUA_CALL_REINIT_MEDIA`` recreates the media transport). PJSIP has no T.38:
it refuses image offers with 488, as audio-only equipment does.

Protocol: one JSON object per line each way. Commands: ``{"op": "call", "uri": ...}``,
``{"op": "reinvite", "move": bool}``, ``{"op": "info"}``, ``{"op": "hangup"}``,
``{"op": "quit"}``. Events: ``ready``, ``incoming``, ``state``, ``tsx`` (each finished
transaction of the call: method, our role, status), ``info`` (the answer to ``info``),
``error``.

PJSIP runs in this process's main thread only (``mainThreadOnly``, no worker threads),
polled between reads of stdin, so no callback ever races another.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


class AgentCall(pj.Call):  # type: ignore[misc]
    def __init__(self, account: AgentAccount, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.account = account
        self.told: set[str] = set()

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        emit(
            "state",
            state=info.stateText,
            code=int(info.lastStatusCode),
            reason=str(info.lastReason),
        )
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.account.agent.call = None

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                manager = pj.Endpoint.instance().audDevManager()
                manager.getCaptureDevMedia().startTransmit(audio)
                audio.startTransmit(manager.getPlaybackDevMedia())
        emit("media")

    def onCallTsxState(self, prm: Any) -> None:
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = event.body.tsxState.tsx
        if tsx.state not in (pj.PJSIP_TSX_STATE_COMPLETED, pj.PJSIP_TSX_STATE_TERMINATED):
            return
        # COMPLETED, then TERMINATED: one event per transaction. PJSIP reuses the memory
        # of ended transactions, so the pointer alone would hide a later one.
        key = f"{tsx.pjTransaction!r} {tsx.method} {tsx.role} {tsx.statusCode}"
        if tsx.state == pj.PJSIP_TSX_STATE_TERMINATED:
            if key in self.told:
                self.told.discard(key)  # told at COMPLETED
                return
        elif key in self.told:
            return
        else:
            self.told.add(key)
        emit(
            "tsx",
            method=str(tsx.method),
            role="uac" if tsx.role == pj.PJSIP_ROLE_UAC else "uas",
            status=int(tsx.statusCode),
            state=int(tsx.state),
        )


class AgentAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def onIncomingCall(self, prm: Any) -> None:
        call = AgentCall(self, prm.callId)
        self.agent.call = call
        emit("incoming", remote=str(call.getInfo().remoteUri))
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)
        self.agent.answer_at = _monotonic_ms() + self.agent.answer_delay_ms


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.answer_delay_ms = args.answer_delay_ms
        self.answer_at: float | None = None
        self.call: AgentCall | None = None
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.userAgent = "PJSIP-agent"
        config.logConfig.level = args.log_level
        config.logConfig.consoleLevel = 0  # stdout carries our events only
        config.logConfig.filename = args.log_file
        config.logConfig.msgLogging = True
        config.medConfig.noVad = True  # RTP all the time, silence included
        config.medConfig.threadCnt = 1
        self.ep.libInit(config)
        self.ep.audDevManager().setNullDev()
        transport = pj.TransportConfig()
        transport.port = args.port
        transport.boundAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        self.ep.libStart()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/", "PCMA/"))
            self.ep.codecSetPriority(codec.codecId, 200 if keep else 0)
        account = pj.AccountConfig()
        account.idUri = f"sip:pjsip@127.0.0.1:{args.port}"
        account.sipConfig.proxies = pj.StringVector()
        call = account.callConfig
        call.prackUse = {
            "mandatory": pj.PJSUA_100REL_MANDATORY,
            "optional": pj.PJSUA_100REL_OPTIONAL,
            "off": pj.PJSUA_100REL_NOT_USED,
        }[args.prack]
        call.timerUse = {
            "always": pj.PJSUA_SIP_TIMER_ALWAYS,
            "optional": pj.PJSUA_SIP_TIMER_OPTIONAL,
            "required": pj.PJSUA_SIP_TIMER_REQUIRED,
            "off": pj.PJSUA_SIP_TIMER_INACTIVE,
        }[args.timer]
        call.timerSessExpiresSec = args.session_expires
        call.timerMinSESec = args.min_se
        media = account.mediaConfig.transportConfig
        media.port = args.rtp_port
        media.portRange = 200
        media.boundAddress = "127.0.0.1"
        self.account = AgentAccount(self)
        self.account.create(account)

    def info(self) -> dict[str, Any]:
        call = self.call
        if call is None or not call.isActive():
            return {"active": False}
        info = call.getInfo()
        out: dict[str, Any] = {"active": True, "state": info.stateText}
        try:
            stream = call.getStreamInfo(0)
            stat = call.getStreamStat(0)
            transport = call.getMedTransportInfo(0)
            out |= {
                "remote_rtp": str(stream.remoteRtpAddress),
                "local_rtp": str(transport.localRtpName),
                "rx_packets": int(stat.rtcp.rxStat.pkt),
                "tx_packets": int(stat.rtcp.txStat.pkt),
            }
        except pj.Error as exc:
            out["media_error"] = str(exc.info())
        return out

    def command(self, line: str) -> bool:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "call":
                call = AgentCall(self.account)
                self.call = call
                param = pj.CallOpParam(True)
                call.makeCall(request["uri"], param)
            elif op == "reinvite" and self.call is not None:
                param = pj.CallOpParam(True)
                if request.get("move"):
                    param.opt.flag = pj.PJSUA_CALL_REINIT_MEDIA
                self.call.reinvite(param)
            elif op == "hangup" and self.call is not None:
                self.call.hangup(pj.CallOpParam(True))
            elif op == "info":
                emit("info", **self.info())
            elif op == "quit":
                return False
        except pj.Error as exc:
            emit("error", op=op, message=str(exc.info()))
        return True

    def run(self) -> None:
        emit("ready", port=self.args.port)
        buffer = b""
        running = True
        while running:
            self.ep.libHandleEvents(10)
            if self.answer_at is not None and _monotonic_ms() >= self.answer_at:
                self.answer_at = None
                if self.call is not None:
                    ok = pj.CallOpParam()
                    ok.statusCode = 200
                    try:
                        self.call.answer(ok)
                    except pj.Error as exc:
                        emit("error", op="answer", message=str(exc.info()))
            readable, _, _ = select.select([sys.stdin], [], [], 0)
            if readable:
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip() and not self.command(line.decode()):
                        running = False
        if self.call is not None and self.call.isActive():
            self.call.hangup(pj.CallOpParam(True))
            for _ in range(50):
                self.ep.libHandleEvents(10)
        self.ep.libDestroy()


def _monotonic_ms() -> float:
    return time.monotonic() * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--prack", choices=["mandatory", "optional", "off"], default="mandatory")
    parser.add_argument(
        "--timer", choices=["always", "optional", "required", "off"], default="always"
    )
    parser.add_argument("--session-expires", type=int, default=90)
    parser.add_argument("--min-se", type=int, default=90)
    parser.add_argument("--answer-delay-ms", type=int, default=200)
    parser.add_argument("--log-level", type=int, default=4)
    parser.add_argument("--log-file", default="pjsip.log")
    Agent(parser.parse_args()).run()


if __name__ == "__main__":
    main()
