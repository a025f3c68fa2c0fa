"""The scenario table and the control API's routing, without sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from faxbox.pstn_sim.control import ControlServer
from faxbox.pstn_sim.records import CallLog
from faxbox.pstn_sim.scenarios import (
    DEFAULT_ROW,
    DEFAULT_SCENARIOS,
    Behaviour,
    Scenario,
    choose,
    load_table,
    parse_table,
    table_json,
)
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.pstn_sim.sim import Simulator, dialled_number
from faxbox.shared.numbers import NormalizedNumber, check

EXAMPLES = {
    "+12125550100": Behaviour.RECEIVE,
    "+12125550110": Behaviour.BUSY,
    "+12125550129": Behaviour.NO_ANSWER,
    "+12125550130": Behaviour.REJECT,
    "+12125550141": Behaviour.DROP_ON_PAGE,
    "+12125550155": Behaviour.LOSSY,
    "+12125550160": Behaviour.HUMAN,
    "+12125550177": Behaviour.REFUSE_T38,
    "+12125550181": Behaviour.RECEIVE,  # after a first busy call
    "+12125550195": Behaviour.DROP_ON_PAGE,  # its first call; the redial receives
    "+16465550123": Behaviour.FORWARD,
    "+16465550199": Behaviour.FORWARD,
    "+12125550199": Behaviour.RECEIVE,
    "+442079460958": Behaviour.RECEIVE,
}


@pytest.mark.parametrize(("number", "behaviour"), EXAMPLES.items())
def test_default_table(number: str, behaviour: Behaviour) -> None:
    assert choose(DEFAULT_SCENARIOS, number).behaviour is behaviour


@pytest.mark.parametrize("number", EXAMPLES)
def test_default_numbers_pass_our_number_rules(number: str) -> None:
    # The end-to-end tests dial them through the whole system.
    assert isinstance(check(number), NormalizedNumber)


def test_first_match_wins_and_defaults() -> None:
    table = parse_table(
        json.dumps(
            [
                {"pattern": r"^\+1212", "behaviour": "busy", "status": 600},
                {"pattern": r"^\+1", "behaviour": "reject"},
            ]
        )
    )
    assert choose(table, "+12125550100").final_status == 600
    assert choose(table, "+13125550100").final_status == 603
    assert choose(table, "+442079460958") == DEFAULT_ROW
    assert choose((), "+1").behaviour is Behaviour.RECEIVE
    assert Scenario(pattern="", behaviour=Behaviour.BUSY).final_status == 486


def test_a_drop_on_the_first_call_then_the_redial_receives() -> None:
    row = choose(DEFAULT_SCENARIOS, "+12125550193")
    assert (row.behaviour, row.page, row.drop_first) == (Behaviour.DROP_ON_PAGE, 3, 1)
    assert row.on_call(1) is row
    assert row.on_call(2).behaviour is Behaviour.RECEIVE
    always = choose(DEFAULT_SCENARIOS, "+12125550141")
    assert always.on_call(5) is always  # drop_first 0: every call is dropped


def test_busy_to_the_first_calls_then_the_rows_behaviour() -> None:
    row = choose(DEFAULT_SCENARIOS, "+12125550181")
    assert row.busy_first == 1
    first, second, third = (row.on_call(n) for n in (1, 2, 3))
    assert (first.behaviour, first.final_status) == (Behaviour.BUSY, 486)
    assert second is row
    assert third.behaviour is Behaviour.RECEIVE

    [reject] = parse_table(
        json.dumps([{"pattern": "", "behaviour": "reject", "status": 604, "busy_first": 2}])
    )
    assert [reject.on_call(n).final_status for n in (1, 2, 3, 4)] == [486, 486, 604, 604]
    plain = choose(DEFAULT_SCENARIOS, "+12125550100")
    assert plain.on_call(1) is plain


def test_calls_are_counted_per_number_until_a_reset() -> None:
    calls = CallLog(max_records=1)
    assert [calls.dialled("+12125550181") for _ in range(3)] == [1, 2, 3]
    assert calls.dialled("+12125550182") == 1
    for _ in range(3):  # forgetting old records keeps the counts
        calls.end(calls.new("to_sim", "+1", "+12125550181", "busy"))
    assert calls.dial_counts() == {"+12125550181": 3, "+12125550182": 1}
    calls.reset()
    assert calls.dial_counts() == {}
    assert calls.dialled("+12125550181") == 1


def test_table_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text(table_json(DEFAULT_SCENARIOS))
    assert load_table(path) == DEFAULT_SCENARIOS
    assert load_table(None) == DEFAULT_SCENARIOS


@pytest.mark.parametrize(
    "row",
    [
        {"pattern": "(", "behaviour": "busy"},
        {"pattern": "", "behaviour": "explode"},
        {"pattern": "", "behaviour": "lossy", "loss": 1.5},
        {"pattern": "", "behaviour": "drop_on_page", "page": 0},
        {"pattern": "", "behaviour": "busy", "colour": "red"},
        {"pattern": "", "behaviour": "receive", "busy_first": -1},
    ],
)
def test_bad_rows_are_refused(row: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_table(json.dumps([row]))


def test_dialled_number() -> None:
    assert dialled_number("12125550100") == "+12125550100"
    assert dialled_number("+12125550100") == "+12125550100"
    assert dialled_number("alice") == "alice"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXBOX_PSTN_SIM_SIP_PORT", "5999")
    monkeypatch.setenv("FAXBOX_PSTN_SIM_PACE", "20")
    monkeypatch.setenv("FAXBOX_PSTN_SIM_INBOUND_URI", "sip:10.0.0.1:5080")
    settings = PstnSettings()
    assert (settings.pstn_sim_sip_port, settings.pstn_sim_pace, settings.pstn_sim_inbound_uri) == (
        5999,
        20.0,
        "sip:10.0.0.1:5080",
    )
    assert (settings.pstn_sim_sip_host, settings.pstn_sim_http_port) == ("127.0.0.1", 8070)


async def test_control_routes(tmp_path: Path) -> None:
    sim = Simulator(PstnSettings(pstn_sim_data_dir=tmp_path))
    control = ControlServer(sim)
    record = sim.calls.new("to_sim", "+12125550100", "+12125550110", "busy")
    record.sip_status = 486
    sim.calls.end(record)

    other = sim.calls.new("from_sim", "+12125550100", "+16465550123", "originate")
    status, _, body = await control.route("GET", "/calls?to=+12125550110", b"")
    assert status == 200
    [listed] = json.loads(body)
    assert listed["from"] == "+12125550100"
    assert listed["sip_status"] == 486
    assert listed["ended_at"] is not None
    assert len(json.loads((await control.route("GET", "/calls", b""))[2])) == 2
    status, _, body = await control.route("GET", "/calls?direction=from_sim&to=%2B16465550123", b"")
    assert [c["id"] for c in json.loads(body)] == [other.id]
    assert (await control.route("GET", f"/calls/{record.id}", b""))[0] == 200
    assert (await control.route("GET", f"/calls/{record.id}/tiff", b""))[0] == 404
    assert (await control.route("GET", "/calls/unknown", b""))[0] == 404
    assert (await control.route("DELETE", "/calls", b""))[0] == 405
    assert (await control.route("GET", "/nowhere", b""))[0] == 404
    status, _, body = await control.route("GET", "/scenarios", b"")
    assert len(json.loads(body)) == len(DEFAULT_SCENARIOS)

    status, _, body = await control.route("POST", "/originate", b'{"to": "+1"}')
    assert status == 400
    missing = json.dumps({"from": "+1", "to": "+2", "document": str(tmp_path / "none.tif")})
    assert (await control.route("POST", "/originate", missing.encode()))[0] == 400

    sim.calls.dialled("+12125550181")
    status, _, body = await control.route("GET", "/counts", b"")
    assert (status, json.loads(body)) == (200, {"+12125550181": 1})
    assert (await control.route("POST", "/counts", b""))[0] == 405

    assert (await control.route("POST", "/reset", b""))[0] == 200
    assert json.loads((await control.route("GET", "/calls", b""))[2]) == []
    assert json.loads((await control.route("GET", "/counts", b""))[2]) == {}


async def test_the_log_forgets_the_oldest_ended_calls() -> None:
    calls = CallLog(max_records=3)
    first = calls.new("to_sim", "+1", "+2", "busy")
    live = calls.new("to_sim", "+1", "+2", "receive")  # still in progress: kept
    calls.end(first)
    for _ in range(3):
        calls.end(calls.new("to_sim", "+1", "+2", "busy"))
    ids = [r.id for r in calls.all()]
    assert len(ids) == 3
    assert first.id not in ids
    assert live.id in ids
    assert calls.get(first.id) is None
