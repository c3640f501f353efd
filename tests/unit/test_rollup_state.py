"""Rollup state stays small per event: what the runner holds for a window, pickled.

A size, not a speed: deterministic for the same events. The bound is the issue's target
(100 bytes per event inside the allowed lateness); the seed's traffic measures ~22.
"""

from loadgen.bench.state_size import consent_state_bytes_per_event


def test_a_window_of_seed_traffic_holds_a_few_bytes_per_event() -> None:
    figures = consent_state_bytes_per_event(events=20_000, windows=20, users=20_000)
    assert figures["events"] == 20_000 and figures["distinct_users"] == 20_000
    assert figures["bytes_per_event"] <= 100


def test_recurring_users_cost_less_than_new_ones() -> None:
    new_users = consent_state_bytes_per_event(events=20_000, windows=20, users=20_000)
    recurring = consent_state_bytes_per_event(events=20_000, windows=20, users=100)
    assert recurring["bytes_per_event"] < new_users["bytes_per_event"]
