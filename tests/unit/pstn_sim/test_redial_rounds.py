"""pstn-sim's route list to the inbound receiver's replicas, and its rounds of tries."""

from __future__ import annotations

import pytest

from faxbox.pstn_sim.redial import RedialPolicy, Routes, parse_routes


def test_a_route_list_is_comma_separated_and_never_empty() -> None:
    assert parse_routes("sip:127.0.0.1:5080") == ("sip:127.0.0.1:5080",)
    assert parse_routes(" sip:a:1 , sip:b:2,") == ("sip:a:1", "sip:b:2")
    with pytest.raises(ValueError, match="no SIP URI"):
        parse_routes(" , ")


def test_each_call_starts_at_the_next_route_and_keeps_the_others_in_turn() -> None:
    routes = Routes(("a", "b", "c"))
    assert [routes.for_a_call() for _ in range(4)] == [
        ("a", "b", "c"),
        ("b", "c", "a"),
        ("c", "a", "b"),
        ("a", "b", "c"),
    ]
    assert Routes(("only",)).for_a_call() == ("only",)


def test_a_round_waits_its_retry_after_or_the_backoff_within_the_bounds() -> None:
    policy = RedialPolicy(tries=3, window_s=100, backoff_s=5, backoff_max_s=60)
    assert policy.next_delay(1, 0, None) == 5
    assert policy.next_delay(2, 0, None) == 10
    assert policy.next_delay(1, 0, 2) == 2
    assert policy.next_delay(1, 0, 600) == 60  # a Retry-After is honoured up to the maximum
    assert policy.next_delay(3, 0, None) is None  # the last round
    assert policy.next_delay(1, 98, None) is None  # past the window
