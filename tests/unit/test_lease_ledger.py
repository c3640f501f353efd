"""Leases: which held messages are due for an extension, given up, redelivered or released."""

from stream.pipeline.io.leases import (
    EXTEND_BY_SECONDS,
    FIRST_EXTENSION_AFTER_SECONDS,
    MIN_ACK_DEADLINE_SECONDS,
    RENEW_BEFORE_SECONDS,
    Leases,
    Renewal,
)

HOUR = 3600.0


def test_the_first_extension_comes_before_pubsubs_shortest_deadline() -> None:
    assert FIRST_EXTENSION_AFTER_SECONDS < MIN_ACK_DEADLINE_SECONDS / 2
    assert RENEW_BEFORE_SECONDS < EXTEND_BY_SECONDS <= 600  # Pub/Sub's maximum


def test_nothing_is_due_before_three_seconds_then_everything_held() -> None:
    leases = Leases()
    assert leases.hold(1, [("a1", "m1"), ("a2", "m2")], now=100.0, max_lease=HOUR) == 0
    assert leases.due(102.9) == Renewal()
    assert leases.due(103.0) == Renewal(extend={60: ["a1", "a2"]})
    assert len(leases) == 2


def test_an_extension_moves_the_next_one_forty_seconds_on() -> None:
    leases = Leases()
    leases.hold(1, [("a1", "m1")], now=0.0, max_lease=HOUR)
    leases.extended(["a1"], 60, now=3.0)
    assert leases.due(42.9) == Renewal()
    assert leases.due(43.0) == Renewal(extend={60: ["a1"]})


def test_acknowledged_messages_are_never_extended() -> None:
    leases = Leases()
    leases.hold(1, [("a1", "m1"), ("a2", "m2")], now=0.0, max_lease=HOUR)
    leases.done(["a1"])
    assert leases.due(10.0) == Renewal(extend={60: ["a2"]})
    leases.extended(["a1"], 60, now=10.0)  # acknowledged meanwhile: ignored
    assert len(leases) == 1


def test_no_extension_goes_past_the_maximum_lease_then_it_is_given_up() -> None:
    leases = Leases()
    leases.hold(1, [("a1", "m1")], now=0.0, max_lease=100.0)
    leases.extended(["a1"], 60, now=3.0)  # next at 43
    assert leases.due(43.0) == Renewal(extend={57: ["a1"]})  # ceil(100 - 43)
    leases.extended(["a1"], 57, now=43.0)  # the last one: up to the maximum
    assert leases.due(99.0) == Renewal()
    assert leases.due(100.0) == Renewal(given_up=("a1",))
    assert len(leases) == 0
    assert leases.due(200.0) == Renewal()


def test_a_message_pulled_again_while_held_is_a_redelivery() -> None:
    leases = Leases()
    leases.hold(1, [("a1", "m1"), ("a2", "m2")], now=0.0, max_lease=HOUR)
    assert leases.hold(2, [("b1", "m1"), ("b3", "m3")], now=20.0, max_lease=HOUR) == 1
    # The new delivery's ack id replaces the old one; acknowledging the old one is harmless.
    assert leases.due(23.0) == Renewal(extend={60: ["a2", "b1", "b3"]})
    leases.done(["a1"])
    assert sorted(leases.take()) == ["a2", "b1", "b3"]
    # Once acknowledged, the same message id is new again (a redelivery after the ack).
    assert leases.hold(1, [("c1", "m1")], now=30.0, max_lease=HOUR) == 0


def test_release_takes_one_owners_leases_or_the_given_ones_or_all() -> None:
    leases = Leases()
    leases.hold(1, [("a1", "m1"), ("a2", "m2")], now=0.0, max_lease=HOUR)
    leases.hold(2, [("b1", "n1")], now=0.0, max_lease=HOUR)
    leases.hold(3, [("c1", "o1"), ("c2", "o2")], now=0.0, max_lease=HOUR)
    assert leases.peak == 5
    assert sorted(leases.take(owner=1)) == ["a1", "a2"]
    assert leases.take(owner=1) == []
    assert leases.take(ack_ids=["c2", "unknown"]) == ["c2"]
    assert sorted(leases.take()) == ["b1", "c1"]
    assert len(leases) == 0
    assert leases.peak == 5
