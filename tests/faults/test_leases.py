"""The lease keeper against the real Pub/Sub emulator: held messages outlive the ack deadline.

A subscription with Pub/Sub's shortest ack deadline (10 s); messages are pulled with a plain
subscriber and handed to a keeper as the pull source does. What comes back, and when, is
read with plain pulls.
"""

import time
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from stream.pipeline.io.leases import LeaseKeeper, Leases
from tests.helpers.load import publish
from tests.helpers.resources import new_resources

pytestmark = [pytest.mark.faults, pytest.mark.emulator]

ACK_DEADLINE = 10  # Pub/Sub's minimum


def _pull(subscription: str, want: int, timeout: float) -> list[Any]:
    """Pull (never acknowledge) until `want` messages arrived or `timeout` passed."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    with pubsub_v1.SubscriberClient() as subscriber:
        while len(received) < want and (left := deadline - time.monotonic()) > 0:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 100},
                    timeout=max(1.0, min(left, 3.0)),
                )
            except gexc.DeadlineExceeded:  # an empty long poll, on the emulator
                continue
            received.extend(response.received_messages)
    return received


def _ids(messages: list[Any]) -> set[str]:
    return {m.message.message_id for m in messages}


def _pairs(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m.ack_id, m.message.message_id) for m in messages]


def test_kept_leases_outlive_the_deadline_and_release_gives_them_back_at_once(
    emulators: object,
) -> None:
    resources = new_resources(ack_deadline=ACK_DEADLINE)
    published = publish(resources.topic, [(f"m{i}".encode(), {}) for i in range(6)])
    first = _pull(resources.subscription, 6, timeout=30)
    assert _ids(first) == set(published)
    kept, unkept = first[:3], first[3:]

    keeper = LeaseKeeper(resources.subscription)
    unextended = Leases()  # held the same way, but nobody extends them
    try:
        assert keeper.hold(1, _pairs(kept), max_lease=3600) == 0
        assert unextended.hold(1, _pairs(unkept), now=time.monotonic(), max_lease=3600) == 0
        # Only the unextended ones come back after the deadline ...
        again = _pull(resources.subscription, 3, timeout=3 * ACK_DEADLINE)
        assert _ids(again) == _ids(unkept)
        # ... and pulling them while still "held" is what the pull source counts.
        assert unextended.hold(1, _pairs(again), now=time.monotonic(), max_lease=3600) == 3
        # The kept ones were pulled at the same time, so their deadline passed too: the
        # keeper's extensions kept them leased.
        assert _pull(resources.subscription, 1, timeout=5) == []
        assert keeper.extended >= 3 and keeper.held == 3

        assert keeper.release(owner=1) == 3
        back = _pull(resources.subscription, 3, timeout=5)  # at once, not after a deadline
        assert _ids(back) == _ids(kept)
        assert keeper.held == 0
    finally:
        keeper.stop()


def test_a_lease_is_not_extended_past_its_maximum(emulators: object) -> None:
    resources = new_resources(ack_deadline=ACK_DEADLINE)
    published = publish(resources.topic, [(b"short", {})])
    first = _pull(resources.subscription, 1, timeout=30)
    keeper = LeaseKeeper(resources.subscription)
    try:
        keeper.hold(1, _pairs(first), max_lease=12)  # extended once, by 9 s at most
        again = _pull(resources.subscription, 1, timeout=6 * ACK_DEADLINE)
        assert _ids(again) == set(published)
        # The keeper notices the maximum at its next round, which may come after the
        # emulator already redelivered the message: wait for that round.
        deadline = time.monotonic() + 2 * ACK_DEADLINE
        while keeper.given_up == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert keeper.given_up == 1 and keeper.held == 0
    finally:
        keeper.stop()
