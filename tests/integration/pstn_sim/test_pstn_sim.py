"""The phone-network simulator, engine to engine over SIP on 127.0.0.1 at pace 20.

A fax machine built from our SIP ``UserAgent`` and spandsp sessions dials the
simulator; each scenario of the default table gives its expected result. For ``forward``
and ``originate`` a second user agent plays our inbound receiver.

Results measured here (and what the transmitter should expect):
- drop_on_page 2 of 3: the sender sees T30_ERR_CALLDROPPED, class *line*, 1 page sent;
  the far end kept exactly page 1.
- human: T30_ERR_T0_EXPIRED (no fax answer within T.30's T0), class *line*.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image
from prometheus_client import REGISTRY

from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.outcome import FailureClass
from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.ua import CallFailed, FailureKind, UserAgent
from faxbox.pstn_sim.scenarios import Behaviour, Scenario
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings

if TYPE_CHECKING:
    from tests.integration.pstn_sim._pstn_support import (
        BUSY,
        CALLER,
        DROP,
        FAXBOX,
        HUMAN,
        LOSSY,
        LOSSY_T38,
        NO_ANSWER,
        RECEIVE,
        REFUSE_T38,
        REJECT,
        Receiver,
        assert_sent,
        factory,
        http_json,
        send,
    )
    from tests.integration.sip._pages import (
        assert_pages_identical,
        decode_pages,
        text_page,
    )
else:
    from _pstn_support import (
        BUSY,
        CALLER,
        DROP,
        FAXBOX,
        HUMAN,
        LOSSY,
        LOSSY_T38,
        NO_ANSWER,
        RECEIVE,
        REFUSE_T38,
        REJECT,
        Receiver,
        assert_sent,
        factory,
        http_json,
        send,
    )

    from tests.integration.sip._pages import assert_pages_identical, decode_pages, text_page

pytestmark = pytest.mark.timeout(60)
PACE = 20
# 40 ms of real time (0.8 s of line time) per leg: twice the SIP layer's default, so the
# G.711 calls ride out the event-loop stalls of this shared 2-core machine under load.
JITTER_PREFILL = 40


# --- scenarios of the default table -----------------------------------------------------


@pytest.mark.parametrize("t38", [False, True], ids=["g711", "t38"])
async def test_receive_keeps_the_pages(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path, t38: bool
) -> None:
    outcome, call, record = await send(caller, sim, RECEIVE, three_pages, t38=t38)
    assert_sent(outcome)
    assert outcome.remote_id == "PSTN-SIM"
    assert call.media_kind == ("t38" if t38 else "audio")
    assert record.behaviour == "receive"
    assert record.media == ("t38" if t38 else "g711")
    assert record.sip_status == 200
    assert record.outcome is not None
    assert record.outcome.success
    assert record.outcome.remote_id == "CALLER"
    assert record.pages_received == 3
    assert record.received_tiff is not None
    assert_pages_identical(three_pages, Path(record.received_tiff))


async def test_busy(caller: UserAgent, sim: RunningSimulator) -> None:
    labels = {"direction": "to_sim", "behaviour": "busy", "result": "sip_486"}
    before = REGISTRY.get_sample_value("faxbox_pstn_sim_calls_total", labels) or 0
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, BUSY)
    assert failed.value.status == 486
    assert failed.value.kind is FailureKind.BUSY
    [record] = await sim.calls.wait_for(BUSY)
    assert (record.behaviour, record.sip_status, record.answered_at) == ("busy", 486, None)
    assert REGISTRY.get_sample_value("faxbox_pstn_sim_calls_total", labels) == before + 1


async def test_busy_to_the_first_call_then_a_fax_machine(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path
) -> None:
    number = "+12125550181"  # default table: busy_first 1, then receive
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, number)
    assert failed.value.status == 486
    call = await caller.dial(sim.sip_uri, CALLER, number)
    outcome = await run_fax_over_call(call, factory("send", three_pages, "CALLER"))
    assert_sent(outcome)
    busy, received = await asyncio.wait_for(sim.calls.wait_for(number, count=2), 10)
    assert (busy.behaviour, busy.sip_status, busy.answered_at) == ("busy", 486, None)
    assert (received.behaviour, received.sip_status, received.pages_received) == ("receive", 200, 3)
    counts = await asyncio.to_thread(http_json, f"{sim.control_url}/counts")
    assert counts == {number: 2}


async def test_no_answer_rings_then_480(caller: UserAgent, sim: RunningSimulator) -> None:
    progress: list[int] = []
    with pytest.raises(CallFailed) as failed:
        await caller.dial(
            sim.sip_uri, CALLER, NO_ANSWER, on_progress=lambda s, _r: progress.append(s)
        )
    # 60 s of ringing in line time is 3 s at pace 20.
    assert failed.value.status == 480
    assert failed.value.kind is FailureKind.NO_ANSWER
    assert progress[:1] == [180]


async def test_no_answer_caller_gives_up(caller: UserAgent, sim: RunningSimulator) -> None:
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, NO_ANSWER, answer_timeout=0.5)
    assert failed.value.kind is FailureKind.NO_ANSWER  # CANCEL → 487, reported as 408
    [record] = await asyncio.wait_for(sim.calls.wait_for(NO_ANSWER), 5)
    assert record.sip_status == 487


async def test_reject(caller: UserAgent, sim: RunningSimulator) -> None:
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, REJECT)
    assert failed.value.status == 603
    assert failed.value.kind is FailureKind.REJECTED


@pytest.mark.parametrize("t38", [False, True], ids=["g711", "t38"])
async def test_drop_on_page_two_of_three(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path, t38: bool
) -> None:
    outcome, call, record = await send(caller, sim, DROP, three_pages, t38=t38)
    assert not outcome.success
    assert call.remote_hung_up
    # Measured: spandsp reports the cut-off call (not a T.30 protocol error), class line.
    assert outcome.completion_name == "T30_ERR_CALLDROPPED"
    assert outcome.failure_class is FailureClass.LINE
    assert outcome.pages_transferred == 1
    assert record.pages_received == 1
    assert record.received_tiff is not None
    sent_pages = decode_pages(three_pages)
    [got] = decode_pages(Path(record.received_tiff))
    assert (got == sent_pages[0]).all()


async def test_lossy_line_completes_with_ecm(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path
) -> None:
    outcome, _, record = await send(caller, sim, LOSSY, three_pages)
    assert_sent(outcome)
    assert outcome.ecm
    assert sum(page.ecm_retries for page in outcome.pages) > 0  # frames were lost
    assert record.received_tiff is not None
    assert_pages_identical(three_pages, Path(record.received_tiff))


async def test_lossy_t38_line_recovers_with_redundancy_and_ecm(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path
) -> None:
    outcome, call, record = await send(caller, sim, LOSSY_T38, three_pages, t38=True)
    assert_sent(outcome)
    assert call.media_kind == "t38"
    assert record.received_tiff is not None
    assert_pages_identical(three_pages, Path(record.received_tiff))


async def test_human_answers(caller: UserAgent, sim: RunningSimulator, three_pages: Path) -> None:
    outcome, _, record = await send(caller, sim, HUMAN, three_pages)
    assert not outcome.success
    assert outcome.completion_name == "T30_ERR_T0_EXPIRED"
    assert outcome.failure_class is FailureClass.LINE
    assert outcome.pages_transferred == 0
    assert (record.behaviour, record.sip_status, record.outcome) == ("human", 200, None)


async def test_refuse_t38_falls_back_to_g711(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path
) -> None:
    call = await caller.dial(sim.sip_uri, CALLER, REFUSE_T38)
    assert not await call.request_t38()
    outcome = await run_fax_over_call(call, factory("send", three_pages, "CALLER"))
    assert_sent(outcome)
    [record] = await asyncio.wait_for(sim.calls.wait_for(REFUSE_T38), 10)
    assert record.media == "g711"
    assert record.pages_received == 3


_CALLER_SCRIPT = """
import asyncio, sys
from pathlib import Path
from faxbox.fax.session import CallSettings, T38Session
from faxbox.fax.sip.ua import UserAgent
from faxbox.fax.line.pump import run_fax_over_call

async def main() -> None:
    ua = await UserAgent.start(pace=float(sys.argv[3]))
    call = await ua.dial(sys.argv[1], "+12125550100", sys.argv[2])
    await call.request_t38()
    print("answered", flush=True)
    settings = CallSettings(file=Path(sys.argv[4]))
    await run_fax_over_call(call, lambda kind: T38Session("send", settings))

asyncio.run(main())
"""


async def test_a_caller_killed_mid_call_ends_the_record(
    sim: RunningSimulator, three_pages: Path
) -> None:
    # A transmitter killed with SIGKILL sends no BYE; a spandsp T.38 terminal waiting for
    # image data never times out, so the simulator's media watchdog ends the call.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CALLER_SCRIPT,
        sim.sip_uri,
        RECEIVE,
        str(PACE),
        str(three_pages),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 10) == b"answered\n"
    await asyncio.sleep(1.2)  # 24 s of line time: into page 1 or 2
    process.kill()
    await process.wait()
    # media_timeout_s 60 s of line time: 3 s here.
    [record] = await asyncio.wait_for(sim.calls.wait_for(RECEIVE), 10)
    assert record.media == "t38"
    assert record.outcome is not None
    assert not record.outcome.success
    assert record.outcome.completion_name == "T30_ERR_CALLDROPPED"
    assert record.pages_received < 3


# --- originate: the network calls us ------------------------------------------------------


@pytest.mark.parametrize("media", ["g711", "t38"])
async def test_originate_over_the_control_api(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path, media: str
) -> None:
    answer = await asyncio.to_thread(
        http_json,
        f"{sim.control_url}/originate",
        {"from": "+12125550188", "to": FAXBOX, "document": str(three_pages), "media": media},
    )
    incoming, call, got, path = await asyncio.wait_for(fresh_receiver.results.get(), 15)
    assert (incoming.from_number, incoming.to_number) == ("+12125550188", FAXBOX)
    assert got.success
    assert got.pages_transferred == 3
    assert got.remote_id == "PSTN-SIM"
    assert_pages_identical(three_pages, path)
    assert call.media_kind == ("t38" if media == "t38" else "audio")
    record = await asyncio.wait_for(sim.calls.wait(answer["id"]), 10)
    public = await asyncio.to_thread(http_json, f"{sim.control_url}/calls/{answer['id']}")
    assert public["direction"] == "from_sim"
    assert public["from"] == "+12125550188"
    assert public["media"] == media
    assert public["outcome"]["success"] is True
    assert public["outcome"]["pages"] == 3
    assert record.ended_at is not None


async def test_originate_renders_a_pdf(
    sim: RunningSimulator, fresh_receiver: Receiver, tmp_path: Path
) -> None:
    pdf = tmp_path / "letter.pdf"
    text_page(5).convert("L").save(pdf, resolution=200.0)
    record = sim.originate("+12125550188", FAXBOX, pdf)
    _, _, got, path = await asyncio.wait_for(fresh_receiver.results.get(), 15)
    await asyncio.wait_for(sim.calls.wait(record.id), 5)
    assert got.success
    assert got.pages_transferred == 1
    assert record.outcome is not None
    assert record.outcome.success
    with Image.open(path) as image:
        assert image.size[0] == 1728


@pytest.mark.parametrize("media", ["g711", "t38"])
async def test_originate_a_partial_fax(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path, media: str
) -> None:
    answer = await asyncio.to_thread(
        http_json,
        f"{sim.control_url}/originate",
        {
            "from": "+12125550188",
            "to": FAXBOX,
            "document": str(three_pages),
            "media": media,
            "drop_on_page": 2,
        },
    )
    _, call, got, path = await asyncio.wait_for(fresh_receiver.results.get(), 15)
    assert call.remote_hung_up
    assert not got.success
    assert got.pages_transferred == 1
    [page] = decode_pages(path)
    assert (page == decode_pages(three_pages)[0]).all()
    record = await asyncio.wait_for(sim.calls.wait(answer["id"]), 5)
    assert record.outcome is not None
    assert (record.outcome.success, record.outcome.pages) == (False, 1)


async def test_originate_to_a_busy_receiver(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path
) -> None:
    fresh_receiver.mode = "busy"
    record = sim.originate("+12125550188", FAXBOX, three_pages)
    await asyncio.wait_for(sim.calls.wait(record.id), 5)
    assert (record.sip_status, record.outcome, record.answered_at) == (486, None, None)
    assert record.error is not None
    assert record.error.startswith("486")
    assert len(record.tries) == 1  # busy is an answer: a carrier does not insist


async def test_originate_tries_again_after_a_503_with_retry_after(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path
) -> None:
    fresh_receiver.unavailable = 2
    record = sim.originate("+12125550188", FAXBOX, three_pages)
    await asyncio.wait_for(sim.calls.wait(record.id), 30)
    assert [t.sip_status for t in record.tries] == [503, 503, 200]
    assert [t.retry_after_s for t in record.tries] == [1, 1, None]
    first, second, third = record.tries
    assert first.ended_at is not None
    assert second.ended_at is not None
    assert (second.started_at - first.ended_at).total_seconds() >= 0.9  # Retry-After: 1
    assert third.pages == 3
    # The record is the call's, as its last try left it: one fax, received.
    assert record.outcome is not None
    assert record.outcome.success
    assert (record.sip_status, record.error) == (200, None)
    *_, path = await asyncio.wait_for(fresh_receiver.results.get(), 5)
    assert_pages_identical(three_pages, path)
    assert fresh_receiver.results.empty()


async def test_originate_gives_up_at_its_bound(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path
) -> None:
    fresh_receiver.unavailable = 5
    answer = await asyncio.to_thread(
        http_json,
        f"{sim.control_url}/originate",
        {"from": "+12125550188", "to": FAXBOX, "document": str(three_pages), "tries": 2},
    )
    record = await asyncio.wait_for(sim.calls.wait(answer["id"]), 30)
    assert [t.sip_status for t in record.tries] == [503, 503]
    assert (record.sip_status, record.answered_at, record.outcome) == (503, None, None)
    public = await asyncio.to_thread(http_json, f"{sim.control_url}/calls/{answer['id']}")
    assert [t["sip_status"] for t in public["tries"]] == [503, 503]


async def test_originate_refuses_what_is_no_fax(sim: RunningSimulator, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a document")
    record = sim.originate("+12125550188", FAXBOX, junk)
    await asyncio.wait_for(sim.calls.wait(record.id), 5)
    assert record.sip_status is None  # never dialled
    assert record.error is not None


async def test_answer_after_rings_first(tmp_path: Path) -> None:
    table = (Scenario(pattern="", behaviour=Behaviour.RECEIVE, answer_after_s=20),)
    settings = PstnSettings(
        pstn_sim_sip_port=0, pstn_sim_http_port=0, pstn_sim_pace=PACE, pstn_sim_data_dir=tmp_path
    )
    async with running(settings, table) as simulator, await UserAgent.start(pace=PACE) as ua:
        progress: list[int] = []
        call = await ua.dial(
            simulator.sip_uri, CALLER, RECEIVE, on_progress=lambda s, _r: progress.append(s)
        )
        await call.hangup()
        [record] = await asyncio.wait_for(simulator.calls.wait_for(RECEIVE), 5)
    assert progress[:1] == [180]
    assert record.answered_at is not None
    # 20 s of line time at pace 20: a second of ringing.
    assert (record.answered_at - record.started_at).total_seconds() >= 0.9
    assert record.outcome is not None
    assert not record.outcome.success


async def test_control_api_lists_calls_and_serves_tiffs(
    caller: UserAgent, sim: RunningSimulator, three_pages: Path
) -> None:
    _, _, record = await send(caller, sim, RECEIVE, three_pages)
    calls = await asyncio.to_thread(http_json, f"{sim.control_url}/calls")
    assert [c["id"] for c in calls] == [record.id]
    assert calls[0]["to"] == RECEIVE
    tiff = await asyncio.to_thread(http_json, f"{sim.control_url}/calls/{record.id}/tiff")
    assert tiff[:4] == b"II*\x00"
    health = await asyncio.to_thread(http_json, f"{sim.control_url}/healthz")
    assert health["sip_uri"] == sim.sip_uri
    assert (await asyncio.to_thread(http_json, f"{sim.control_url}/reset", {})) == {"reset": True}
    assert await asyncio.to_thread(http_json, f"{sim.control_url}/calls") == []
    with pytest.raises(urllib.error.HTTPError) as missing:
        await asyncio.to_thread(http_json, f"{sim.control_url}/calls/nope")
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as bad:
        await asyncio.to_thread(
            http_json,
            f"{sim.control_url}/originate",
            {"from": "+1", "to": "+2", "document": "/nope"},
        )
    assert bad.value.code == 400


async def test_originate_command_line(
    sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faxbox.pstn_sim",
        "originate",
        "--from",
        "+12125550177",
        "--to",
        FAXBOX,
        "--file",
        str(three_pages),
        "--media",
        "t38",
        "--control",
        sim.control_url,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stdout
    printed = json.loads(stdout)
    assert printed["outcome"]["success"] is True
    assert printed["media"] == "t38"
    _, _, got, _ = await asyncio.wait_for(fresh_receiver.results.get(), 5)
    assert got.success


# --- trunk authentication ----------------------------------------------------------------


async def test_digest_authentication_is_required_when_configured(
    three_pages: Path, tmp_path: Path
) -> None:
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=PACE,
        pstn_sim_data_dir=tmp_path,
        pstn_sim_auth_username="trunk",
        pstn_sim_auth_password="s3cret",
    )
    async with (
        running(settings) as simulator,
        await UserAgent.start(pace=PACE) as ua,
    ):
        with pytest.raises(CallFailed) as anonymous:
            await ua.dial(simulator.sip_uri, CALLER, BUSY)
        assert anonymous.value.status == 401
        with pytest.raises(CallFailed) as wrong:  # the caller tries twice, both logged
            await ua.dial(simulator.sip_uri, CALLER, BUSY, credentials=Credentials("trunk", "nope"))
        assert wrong.value.status == 401
        with pytest.raises(CallFailed) as busy:  # past authentication: the scenario
            await ua.dial(
                simulator.sip_uri, CALLER, BUSY, credentials=Credentials("trunk", "s3cret")
            )
        assert busy.value.status == 486
        assert [r.sip_status for r in simulator.calls.all()] == [401, 401, 486]


# --- as a service ------------------------------------------------------------------------


async def test_runs_as_a_service_with_health_and_metrics(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FAXBOX_PSTN_SIM_SIP_PORT": "0",
        "FAXBOX_PSTN_SIM_HTTP_PORT": "0",
        "FAXBOX_PSTN_SIM_DATA_DIR": str(tmp_path),
        "FAXBOX_HTTP_PORT": "0",
        "FAXBOX_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faxbox.pstn_sim",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not any("service ready" in line for line in lines):
                line = (await process.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        text = "".join(lines)
        assert "pstn-sim listening on sip:127.0.0.1:" in text
        control = _find_after(text, "control API on ")
        health = _find_after(text, '"http": "')
        assert (await asyncio.to_thread(http_json, f"{control}/healthz"))["status"] == "alive"
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{health}/metrics", timeout=5).read().decode()
        )
        assert "faxbox_pstn_sim_calls_in_progress" in metrics
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0


def _find_after(text: str, marker: str) -> str:
    start = text.index(marker) + len(marker)
    end = start
    while end < len(text) and text[end] not in ' "\n,}':
        end += 1
    return text[start:end]
