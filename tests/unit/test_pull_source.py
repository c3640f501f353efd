"""PullMessagesFn alone: how a batch is filled, and what one process() call does with it.

A fake subscriber answers each pull from a script with the client's own response types; a
fake clock moves a fixed step per pull. Leases go to a real LeaseKeeper on the fake.
"""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Duration, Timestamp
from google.api_core import exceptions as gexc
from google.protobuf.timestamp_pb2 import Timestamp as ProtoTimestamp
from google.pubsub_v1 import PubsubMessage, PullResponse, ReceivedMessage

from stream.pipeline.config import PubSubEndpoints
from stream.pipeline.io import clients, leases, pull_pacing
from stream.pipeline.io.pubsub_pull import UNBOUNDED, PullMessagesFn, _Pulls
from stream.pipeline.messages import RawMessage

SUBSCRIPTION = "projects/local-project/subscriptions/unit-pull"
PUBLISHED = datetime(2026, 11, 24, 6, 40, 53, 123456, tzinfo=UTC)
Answer = int | Exception  # how many messages a pull returns, or what it raises


@dataclass
class FakeSubscriber:
    """Pull answers from a script (then empty); a clock step per pull; every request kept."""

    answers: list[Answer]
    clock: "FakeClock"
    step: float = 0.02
    requests: list[dict[str, Any]] = field(default_factory=list)
    modified: list[tuple[list[str], int]] = field(default_factory=list)
    _next_id: int = 0

    def pull(self, request: dict[str, Any], retry: Any, timeout: float) -> PullResponse:
        self.requests.append(request)
        self.clock.now += self.step
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        count = min(answer, request["max_messages"])
        return PullResponse(received_messages=[self._message() for _ in range(count)])

    def modify_ack_deadline(self, request: dict[str, Any], **_: Any) -> None:
        self.modified.append((list(request["ack_ids"]), request["ack_deadline_seconds"]))

    def _message(self) -> ReceivedMessage:
        self._next_id += 1
        n = self._next_id
        stamp = ProtoTimestamp()
        stamp.FromDatetime(PUBLISHED + timedelta(milliseconds=n))
        return ReceivedMessage(
            ack_id=f"ack-{n}",
            message=PubsubMessage(
                data=b'{"n": %d}' % n,
                attributes={"schema": "consent.v1"},
                message_id=f"m-{n}",
                publish_time=stamp,
            ),
        )


class FakeClock:
    """Monotonic seconds that move only when told: by a pull's step, or by a sleep."""

    def __init__(self) -> None:
        self.now = 50.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def fresh_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's readers start with no history (the registry is process-wide)."""
    monkeypatch.setattr(pull_pacing, "_readers", {})


def pull_fn(
    monkeypatch: pytest.MonkeyPatch,
    subscriber: FakeSubscriber,
    max_messages: int = 1000,
    fill: timedelta = timedelta(milliseconds=500),
) -> tuple[PullMessagesFn, leases.LeaseKeeper]:
    keeper = leases.LeaseKeeper(SUBSCRIPTION, subscriber)
    monkeypatch.setattr(clients, "subscriber", lambda: subscriber)
    monkeypatch.setattr(leases, "keeper", lambda subscription: keeper)
    endpoints = PubSubEndpoints(
        subscription=SUBSCRIPTION,
        dead_letter_topic="projects/local-project/topics/unit-dlq",
        pull_max_messages=max_messages,
        pull_fill=fill,
    )
    fn = PullMessagesFn(endpoints, clock=subscriber.clock, sleep=subscriber.clock.sleep)
    fn.setup()
    return fn, keeper


def asked(subscriber: FakeSubscriber) -> list[tuple[int, bool]]:
    """(max_messages, return_immediately) of every pull."""
    return [(r["max_messages"], r["return_immediately"]) for r in subscriber.requests]


def test_a_full_first_pull_is_the_batch(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    subscriber = FakeSubscriber([100], clock)
    fn, _ = pull_fn(monkeypatch, subscriber, max_messages=100)
    assert len(fn._fill(0)) == 100
    assert asked(subscriber) == [(100, False)]  # one long poll, nothing to top up
    assert clock.slept == []


def test_a_backlog_fills_the_batch_at_once_without_waiting(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([100, 100, 100, 30], clock)
    fn, _ = pull_fn(monkeypatch, subscriber, max_messages=250)
    assert len(fn._fill(0)) == 250
    # The first pull waits for messages; top-ups ask for the rest and never wait.
    assert asked(subscriber) == [(250, False), (150, True), (50, True)]
    assert clock.slept == []


def test_a_trickle_waits_once_for_more_then_takes_what_is_at_hand(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # A long poll brings 3 (traffic is light), the batch waits 0.5 s, then takes the 45 that
    # arrived meanwhile; a pull bringing less than a page means nothing more is at hand.
    subscriber = FakeSubscriber([3, 45, 60], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert len(fn._fill(0)) == 48
    assert clock.slept == [0.5]
    assert asked(subscriber) == [(1000, False), (997, True)]


def test_after_the_wait_a_page_means_more_is_at_hand(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([3, 100, 100, 20, 100], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert len(fn._fill(0)) == 223
    assert clock.slept == [0.5]  # waited once, never again in this batch
    assert len(subscriber.requests) == 4


def test_no_wait_when_the_first_pull_is_empty(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([0, 100], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert fn._fill(0) == []
    assert len(subscriber.requests) == 1
    assert clock.slept == []


def test_no_wait_with_pull_fill_zero(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    subscriber = FakeSubscriber([3, 40], clock)
    fn, _ = pull_fn(monkeypatch, subscriber, fill=timedelta(0))
    assert len(fn._fill(0)) == 3
    assert clock.slept == [] and len(subscriber.requests) == 1


def test_a_failed_top_up_keeps_what_is_in_hand(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([60, gexc.ServiceUnavailable("blip"), 100], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert len(fn._fill(0)) == 60
    assert len(subscriber.requests) == 2


def test_a_long_poll_that_times_out_is_an_empty_pull(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([gexc.DeadlineExceeded("no message in time")], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert fn._fill(0) == []


def test_after_a_batch_in_the_bundle_no_pull_waits(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([5, 0], clock)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert len(fn._fill(0, at_hand_only=True)) == 5
    assert asked(subscriber) == [(1000, True)]
    assert clock.slept == []


def test_the_wait_shrinks_as_the_arrival_rate_grows(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # A batch of 5, then 900 a second later: at 900/s the next partial batch waits only as
    # long as the rest of a bundle's worth (pull_pacing.WORTH_A_BUNDLE) takes to arrive.
    subscriber = FakeSubscriber([5, 0, *[100] * 9, 0, 40, 0], clock, step=0.0)
    fn, _ = pull_fn(monkeypatch, subscriber)
    assert len(fn._fill(0)) == 5
    assert clock.slept == [0.5]  # no rate known yet: the longest wait
    clock.now += 1.0
    assert len(fn._fill(0)) == 900
    assert clock.slept == [0.5]  # enough at hand: no wait
    clock.now += 0.1
    assert len(fn._fill(0)) == 40
    expected = (pull_pacing.WORTH_A_BUNDLE - 40) / (900 / 1.0)
    assert clock.slept == [0.5, pytest.approx(expected)]


def _tracker() -> ThreadsafeRestrictionTracker:
    return ThreadsafeRestrictionTracker(_Pulls(OffsetRange(0, UNBOUNDED)))


def _process(
    fn: PullMessagesFn,
) -> tuple[list[Any], ThreadsafeRestrictionTracker, ManualWatermarkEstimator]:
    """One process() call as the SDK makes it: the tracker in its thread-safe view."""
    tracker = _tracker()
    watermark = ManualWatermarkEstimator(None)
    out = list(fn.process(0, tracker=RestrictionTrackerView(tracker), watermark=watermark))
    return out, tracker, watermark


def test_a_batch_is_held_before_any_message_goes_downstream(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([3], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    tracker = _tracker()
    watermark = ManualWatermarkEstimator(None)
    held_at_first: list[int] = []
    view = RestrictionTrackerView(tracker)
    elements: Iterator[Any] = fn.process(0, tracker=view, watermark=watermark)
    first = next(elements)
    held_at_first.append(keeper.held)
    rest = list(elements)
    try:
        assert held_at_first == [3]
        messages: list[RawMessage] = [first.value, *(e.value for e in rest)]
        assert [m.ack_id for m in messages] == ["ack-1", "ack-2", "ack-3"]
        assert messages[0].publish_time == PUBLISHED + timedelta(milliseconds=1)
        assert first.timestamp == Timestamp.from_utc_datetime(messages[0].publish_time)
        # The watermark: the oldest publish time of the batch.
        assert watermark.current_watermark() == first.timestamp
        # One pull round claimed, the rest checkpointed to resume at once.
        residual, delay = tracker.deferred_status()
        assert (residual.start, delay.micros) == (1, 0)
    finally:
        keeper.stop()


def test_a_failed_pull_defers_the_reader_and_keeps_the_watermark(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([gexc.ServiceUnavailable("down")], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    out, tracker, watermark = _process(fn)
    assert out == [] and keeper.held == 0
    assert watermark.current_watermark() is None
    _, delay = tracker.deferred_status()
    assert 0 <= delay.micros <= 200_000  # the first backoff: uniform(0, 0.2 s)


def test_a_failing_reader_gives_back_what_it_holds_when_torn_down(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([2], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    _process(fn)
    assert keeper.held == 2
    fn.teardown()  # the SDK discards a DoFn whose bundle failed
    assert keeper.held == 0
    assert subscriber.modified == [(["ack-1", "ack-2"], 0)]
    keeper.stop()


def test_a_pull_that_returns_after_the_job_ended_gives_its_batch_back(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # The launcher gives back what the ended job held and closes the keeper; a long poll
    # still in flight may receive exactly those messages (Pub/Sub redelivers them at once).
    subscriber = FakeSubscriber([2], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    keeper.close()
    out, tracker, _ = _process(fn)
    assert out == [] and keeper.held == 0
    assert subscriber.modified == [(["ack-1", "ack-2"], 0)]
    assert tracker.deferred_status() is None  # the reader is done
    keeper.reopen()
    subscriber.answers = [1]
    out, _, _ = _process(fn)
    assert len(out) == 1 and keeper.held == 1
    keeper.stop()


def test_the_jobs_end_waits_for_a_torn_down_readers_release_in_flight(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # Prism tears the reader down on its own thread while the launcher releases what the job
    # held: the launcher must not return (and the process exit) while that give-back runs.
    subscriber = FakeSubscriber([2], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    _process(fn)
    entered, proceed = threading.Event(), threading.Event()
    give_back = subscriber.modify_ack_deadline

    def slow_give_back(request: dict[str, Any], **kwargs: Any) -> None:
        entered.set()
        proceed.wait()
        give_back(request, **kwargs)

    subscriber.modify_ack_deadline = slow_give_back  # type: ignore[method-assign]
    teardown = threading.Thread(target=fn.teardown)
    teardown.start()
    assert entered.wait(5)
    at_job_end: list[int] = []
    job_end = threading.Thread(target=lambda: at_job_end.append(keeper.release()))
    job_end.start()
    job_end.join(0.3)
    blocked = job_end.is_alive()  # behind the teardown's give-back
    proceed.set()
    assert blocked
    teardown.join(5)
    job_end.join(5)
    assert at_job_end == [0]  # nothing left: the teardown gave both back
    assert subscriber.modified == [(["ack-1", "ack-2"], 0)]
    keeper.stop()


def test_a_batch_given_back_after_the_job_ended_counts_as_a_pull_in_flight(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # release_all waits for pulls in flight: that must cover giving back what one received.
    subscriber = FakeSubscriber([2], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    in_flight: list[bool] = []
    give_back = subscriber.modify_ack_deadline

    def observed_give_back(request: dict[str, Any], **kwargs: Any) -> None:
        in_flight.append(not keeper.wait_for_pulls(time.monotonic()))
        give_back(request, **kwargs)

    subscriber.modify_ack_deadline = observed_give_back  # type: ignore[method-assign]
    keeper.close()
    out, _, _ = _process(fn)
    assert out == [] and in_flight == [True]
    assert keeper.wait_for_pulls(time.monotonic())  # and over once the batch is back
    keeper.stop()


def test_a_helper_reader_parks_while_the_leads_batches_are_partial(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([3], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber)
    try:
        lead_out = list(
            fn.process(0, tracker=RestrictionTrackerView(_tracker()), watermark=_estimator())
        )
        lead_mark = lead_out[0].timestamp  # the oldest publish time of the lead's batch
        tracker, watermark = _tracker(), _estimator()
        helper_out = list(
            fn.process(1, tracker=RestrictionTrackerView(tracker), watermark=watermark)
        )
        assert helper_out == [] and len(subscriber.requests) == 2  # the helper pulled nothing
        assert watermark.current_watermark() == lead_mark
        residual, delay = tracker.deferred_status()
        assert residual.start == 1
        # Light traffic: the helper checks again only after the long park (less time spent).
        parked = int(pull_pacing.PARK_LONG_SECONDS * 1e6)
        assert parked - 1_000_000 < delay.micros <= parked
    finally:
        keeper.stop()


def test_helper_readers_pull_while_the_lead_finds_full_batches(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([10, 10, 4], clock)
    fn, keeper = pull_fn(monkeypatch, subscriber, max_messages=10)
    try:
        view = RestrictionTrackerView
        assert len(list(fn.process(0, tracker=view(_tracker()), watermark=_estimator()))) == 10
        assert len(list(fn.process(1, tracker=view(_tracker()), watermark=_estimator()))) == 10
        # Full batches only a while ago: the helper parks again.
        clock.now += pull_pacing.HELPERS_STAY_SECONDS + 1
        assert list(fn.process(1, tracker=view(_tracker()), watermark=_estimator())) == []
        assert len(subscriber.requests) == 2
    finally:
        keeper.stop()


def _estimator() -> ManualWatermarkEstimator:
    return ManualWatermarkEstimator(None)


def test_a_second_process_probes_what_is_at_hand_then_parks_ahead(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    subscriber = FakeSubscriber([3, 100], clock)
    keeper = leases.LeaseKeeper(SUBSCRIPTION, subscriber)
    monkeypatch.setattr(clients, "subscriber", lambda: subscriber)
    monkeypatch.setattr(leases, "keeper", lambda subscription: keeper)
    endpoints = PubSubEndpoints(
        subscription=SUBSCRIPTION, dead_letter_topic="projects/local-project/topics/unit-dlq"
    )
    fn = PullMessagesFn(endpoints, clock=clock, sleep=clock.sleep, leads=False)
    fn.setup()
    try:
        tracker, watermark = _tracker(), _estimator()
        before = Timestamp.now()
        out = list(fn.process(0, tracker=RestrictionTrackerView(tracker), watermark=watermark))
        assert len(out) == 3
        assert asked(subscriber) == [(1000, True)]  # at hand only: no long poll, no wait
        assert clock.slept == []
        _, delay = tracker.deferred_status()
        parked = pull_pacing.PARK_SHORT_SECONDS  # its first probe: back soon
        assert 0 < delay.micros <= parked * 1e6
        # Its watermark moves on by the park: the rollups follow the leading process's.
        assert watermark.current_watermark() >= before + Duration(seconds=parked)
    finally:
        keeper.stop()
