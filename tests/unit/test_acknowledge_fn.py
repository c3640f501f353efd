"""AcknowledgeFn alone: ack ids acknowledged per bundle in request-sized chunks; failures.

A fake subscriber records each Acknowledge (and can fail chosen ones); leases are a real
LeaseKeeper on the same fake, so "acknowledged" and "given back" are both visible.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry

from stream.pipeline.io import clients, leases
from stream.pipeline.io.pubsub_ack import AcknowledgeFn

SUBSCRIPTION = "projects/local-project/subscriptions/unit-ack"


@dataclass
class FakeSubscriber:
    """Acknowledge answers: the n-th call raises `failures[n]` if given."""

    failures: dict[int, Exception] = field(default_factory=dict)
    acked: list[list[str]] = field(default_factory=list)
    retries: list[Any] = field(default_factory=list)
    modified: list[tuple[list[str], int]] = field(default_factory=list)

    def acknowledge(self, request: dict[str, Any], retry: Any, timeout: float) -> None:
        failure = self.failures.get(len(self.retries))
        self.retries.append((retry, timeout))
        if failure is not None:
            raise failure
        self.acked.append(list(request["ack_ids"]))

    def modify_ack_deadline(self, request: dict[str, Any], **_: Any) -> None:
        self.modified.append((list(request["ack_ids"]), request["ack_deadline_seconds"]))


def ack_fn(
    monkeypatch: pytest.MonkeyPatch, subscriber: FakeSubscriber, held: list[str]
) -> tuple[AcknowledgeFn, leases.LeaseKeeper]:
    keeper = leases.LeaseKeeper(SUBSCRIPTION, subscriber)
    keeper.hold(1, [(ack_id, f"m-{ack_id}") for ack_id in held], max_lease=3600.0)
    monkeypatch.setattr(clients, "subscriber", lambda: subscriber)
    monkeypatch.setattr(leases, "keeper", lambda subscription: keeper)
    fn = AcknowledgeFn(SUBSCRIPTION)
    fn.setup()
    return fn, keeper


def bundle(fn: AcknowledgeFn, ack_ids: list[str]) -> None:
    fn.start_bundle()
    for ack_id in ack_ids:
        fn.process(ack_id)
    fn.finish_bundle()


def test_a_bundles_ack_ids_go_in_chunks_of_a_thousand(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"a{i}" for i in range(2500)]
    subscriber = FakeSubscriber()
    fn, keeper = ack_fn(monkeypatch, subscriber, ids)
    try:
        assert subscriber.acked == []  # nothing before the bundle ends
        bundle(fn, ids)
        assert [len(chunk) for chunk in subscriber.acked] == [1000, 1000, 500]
        assert [a for chunk in subscriber.acked for a in chunk] == ids
        assert keeper.held == 0 and subscriber.modified == []
    finally:
        keeper.stop()


def test_each_acknowledge_is_retried_for_thirty_seconds_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscriber = FakeSubscriber()
    fn, keeper = ack_fn(monkeypatch, subscriber, ["a"])
    try:
        bundle(fn, ["a"])
        ((retry, timeout),) = subscriber.retries
        assert isinstance(retry, Retry) and retry.timeout == 30.0 and timeout == 30.0
    finally:
        keeper.stop()


def test_a_chunk_that_cannot_be_acknowledged_is_given_back_and_the_rest_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [f"a{i}" for i in range(1500)]
    subscriber = FakeSubscriber(failures={0: gexc.DeadlineExceeded("answer lost")})
    fn, keeper = ack_fn(monkeypatch, subscriber, ids)
    try:
        bundle(fn, ids)
        assert subscriber.acked == [ids[1000:]]
        # Given back at once (ack deadline 0): redelivered and rewritten identically.
        assert subscriber.modified == [(ids[:1000], 0)]
        assert keeper.held == 0
    finally:
        keeper.stop()


def test_a_bug_is_not_taken_for_a_failed_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    subscriber = FakeSubscriber(failures={0: TypeError("a bug of ours")})
    fn, keeper = ack_fn(monkeypatch, subscriber, ["a"])
    try:
        with pytest.raises(TypeError):
            bundle(fn, ["a"])
        assert keeper.held == 1  # left to the bundle's failure, which gives it back
    finally:
        keeper.stop()
