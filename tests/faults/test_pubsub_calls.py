"""Every call the pipeline makes to Pub/Sub, failing with every code Pub/Sub really returns.

Pull (the pull source), Acknowledge (its ack stage), ModifyAckDeadline (the lease keeper) and
Publish (the dead-letter topic) run against the real emulator behind the Pub/Sub fault proxy.
What must happen is written from the codes' meanings: a transient code (UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED, CANCELLED) is retried or waited out
and nothing is lost or acknowledged early; a permanent one (NOT_FOUND: the subscription or
topic was deleted; PERMISSION_DENIED; FAILED_PRECONDITION) stops with a RefusedError that
names the resource and what to change. Outcomes are read from the emulator directly.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as gexc

from loadgen.readback import pull_letters
from stream.names import PUBSUB_ENV
from stream.pipeline.config import PubSubEndpoints
from stream.pipeline.io import clients, leases
from stream.pipeline.io.deadletter_topic import PublishDeadLettersFn
from stream.pipeline.io.pubsub_ack import AcknowledgeFn
from stream.pipeline.io.pubsub_pull import UNBOUNDED, PullMessagesFn, _Pulls
from stream.pipeline.letters import MESSAGE_ID_ATTRIBUTE
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage
from stream.pipeline.refused import MARKER, RefusedError
from tests.faults.pubsub_proxy import REFUSED_CODES, TRANSIENT_CODES, PubSubFaultProxy
from tests.helpers.load import publish
from tests.helpers.resources import TestResources

pytestmark = [pytest.mark.faults, pytest.mark.emulator]

TRANSIENT = list(TRANSIENT_CODES)
PERMANENT = list(REFUSED_CODES)
T = TypeVar("T")


def _name(code: grpc.StatusCode) -> str:
    return str(code.name)


def through(proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch, build: Callable[[], T]) -> T:
    """`build()` with the Pub/Sub clients it creates pointed at the proxy."""
    with monkeypatch.context() as patch:
        patch.setenv(PUBSUB_ENV, proxy.address)
        return build()


def endpoints(resources: TestResources) -> PubSubEndpoints:
    return PubSubEndpoints(
        subscription=resources.subscription,
        dead_letter_topic=resources.dead_letter_topic,
        pull_max_messages=100,
    )


def pull_fn(resources: TestResources) -> PullMessagesFn:
    fn = PullMessagesFn(endpoints(resources))
    fn.setup()
    return fn


def pull_once(fn: PullMessagesFn) -> list[RawMessage]:
    """One process() call as the SDK makes it: the messages it yields."""
    tracker = ThreadsafeRestrictionTracker(_Pulls(OffsetRange(0, UNBOUNDED)))
    view = RestrictionTrackerView(tracker)
    out = fn.process(0, tracker=view, watermark=ManualWatermarkEstimator(None))
    return [element.value for element in out]


def pull_until(fn: PullMessagesFn, count: int, rounds: int = 20) -> list[RawMessage]:
    got: list[RawMessage] = []
    for _ in range(rounds):
        got += pull_once(fn)
        if len(got) >= count:
            break
    return got


def messages(n: int, tag: str) -> list[tuple[bytes, dict[str, str]]]:
    return [(f'{{"{tag}": {i}}}'.encode(), {}) for i in range(n)]


def in_subscription(resources: TestResources, expected: int) -> list[Any]:
    """What a reader of the subscription gets now, straight from the emulator (acknowledged)."""
    return pull_letters(resources.subscription, expected=expected, timeout=15)


def assert_refusal(refusal: RefusedError, resource: str, code: grpc.StatusCode) -> None:
    text = str(refusal)
    assert text.startswith(MARKER) and resource in text
    if code == grpc.StatusCode.PERMISSION_DENIED:
        assert "Grant the job's service account roles/pubsub." in text
    elif code == grpc.StatusCode.NOT_FOUND:
        assert "does not exist" in text and "Create" in text
    else:
        assert "present state" in text


# -- Pull ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_a_failed_pull_is_waited_out_and_loses_nothing(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    ids = publish(resources.topic, messages(5, "pull"))
    fn = through(pubsub_proxy, monkeypatch, lambda: pull_fn(resources))
    pubsub_proxy.fail_next("Pull", 2, code)
    assert pull_once(fn) == []  # the failed pull yields nothing; the reader backs off
    got = pull_until(fn, 5)
    assert sorted(m.message_id for m in got) == sorted(ids)
    assert pubsub_proxy.stats().of("Pull").failed == 2
    fn.teardown()


@pytest.mark.parametrize("code", PERMANENT, ids=_name)
def test_a_refused_pull_stops_with_what_to_change(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    fn = through(pubsub_proxy, monkeypatch, lambda: pull_fn(resources))
    pubsub_proxy.fail_next("Pull", 1, code)
    with pytest.raises(RefusedError) as refused:
        pull_once(fn)
    assert_refusal(refused.value, resources.subscription, code)


def test_a_lost_pull_answer_delays_its_messages_by_the_ack_deadline_only(
    resources: TestResources, pubsub_proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = publish(resources.topic, messages(3, "lost-pull"))
    fn = through(pubsub_proxy, monkeypatch, lambda: pull_fn(resources))
    pubsub_proxy.lose_answers("Pull", 1.0)
    assert pull_once(fn) == []  # DEADLINE_EXCEEDED: an empty pull to the reader
    pubsub_proxy.reset()
    # The emulator leased them to nobody; they return when the subscription's deadline ends.
    got = pull_until(fn, 3, rounds=60)
    assert sorted(m.message_id for m in got) == sorted(ids)
    fn.teardown()


# -- Acknowledge --------------------------------------------------------------------------------


def _ack_fn(resources: TestResources) -> AcknowledgeFn:
    fn = AcknowledgeFn(resources.subscription)
    fn.setup()
    return fn


def _ack(fn: AcknowledgeFn, ack_ids: list[str]) -> None:
    fn.start_bundle()
    for ack_id in ack_ids:
        fn.process(ack_id)
    fn.finish_bundle()


def _held(
    resources: TestResources, proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch, n: int
) -> tuple[PullMessagesFn, AcknowledgeFn, list[RawMessage]]:
    """`n` messages pulled through the proxy and held, with an ack stage on the proxy too."""
    publish(resources.topic, messages(n, "ack"))
    pull = through(proxy, monkeypatch, lambda: pull_fn(resources))
    ack = through(proxy, monkeypatch, lambda: _ack_fn(resources))
    return pull, ack, pull_until(pull, n)


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_a_failed_acknowledge_is_retried_until_it_is_applied(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    pull, ack, held = _held(resources, pubsub_proxy, monkeypatch, 4)
    pubsub_proxy.fail_next("Acknowledge", 2, code)
    _ack(ack, [m.ack_id for m in held if m.ack_id])
    assert pubsub_proxy.stats().of("Acknowledge").forwarded == 1  # the third try
    assert leases.keeper(resources.subscription).held == 0
    pull.teardown()  # gives back what it still holds: nothing
    assert in_subscription(resources, expected=0) == []


def test_a_lost_acknowledge_answer_is_retried_and_harmless(
    resources: TestResources, pubsub_proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull, ack, held = _held(resources, pubsub_proxy, monkeypatch, 4)
    pubsub_proxy.lose_answers("Acknowledge", 0.5, seed=2)
    _ack(ack, [m.ack_id for m in held if m.ack_id])
    stats = pubsub_proxy.stats().of("Acknowledge")
    assert stats.lost >= 0 and stats.forwarded >= 1
    pull.teardown()
    assert in_subscription(resources, expected=0) == []


@pytest.mark.parametrize("code", PERMANENT, ids=_name)
def test_a_refused_acknowledge_stops_and_acknowledges_nothing(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    pull, ack, held = _held(resources, pubsub_proxy, monkeypatch, 3)
    pubsub_proxy.fail_next("Acknowledge", 1, code)
    with pytest.raises(RefusedError) as refused:
        _ack(ack, [m.ack_id for m in held if m.ack_id])
    assert_refusal(refused.value, resources.subscription, code)
    # Given back at once, not acknowledged: a reader gets them straight away.
    back = in_subscription(resources, expected=3)
    assert sorted(letter.message_id for letter in back) == sorted(m.message_id for m in held)
    pull.teardown()


# -- ModifyAckDeadline (the lease keeper) -------------------------------------------------------


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keeping(
    resources: TestResources, proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> tuple[leases.LeaseKeeper, Clock, PullMessagesFn]:
    """The pull source with a keeper of its own on the proxy, on a clock the test moves."""
    clock = Clock()
    keeper = through(
        proxy,
        monkeypatch,
        lambda: leases.LeaseKeeper(resources.subscription, clients.subscriber(), clock),
    )
    monkeypatch.setattr(leases, "keeper", lambda subscription: keeper)
    fn = through(proxy, monkeypatch, lambda: pull_fn(resources))
    return keeper, clock, fn


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_a_failed_extension_is_retried_in_time(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    publish(resources.topic, messages(2, "lease"))
    keeper, clock, fn = _keeping(resources, pubsub_proxy, monkeypatch)
    try:
        assert len(pull_until(fn, 2)) == 2 and keeper.held == 2
        pubsub_proxy.fail_next("ModifyAckDeadline", 1, code)
        clock.now += 5  # the first extension is due after 3 s
        assert keeper.renew() == 2  # the call's own retry got it through
        assert pubsub_proxy.stats().of("ModifyAckDeadline").failed == 1
        keeper.raise_refusal()  # nothing was refused
    finally:
        keeper.stop()
        fn.teardown()


@pytest.mark.parametrize("code", PERMANENT, ids=_name)
def test_a_refused_extension_stops_the_next_pull(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    publish(resources.topic, messages(2, "lease"))
    keeper, clock, fn = _keeping(resources, pubsub_proxy, monkeypatch)
    try:
        assert len(pull_until(fn, 2)) == 2
        pubsub_proxy.fail_next("ModifyAckDeadline", 1, code)
        clock.now += 5
        assert keeper.renew() == 0
        assert keeper.held == 0  # no extension can succeed: the keeper stops trying
        with pytest.raises(RefusedError) as refused:
            pull_once(fn)
        assert_refusal(refused.value, resources.subscription, code)
    finally:
        keeper.stop()


# -- Publish (the dead-letter topic) ------------------------------------------------------------


def _letters(n: int) -> list[DeadLetter]:
    return [
        DeadLetter(
            raw=RawMessage(data=b"{", attributes={"n": str(i)}, message_id=f"orig-{i}"),
            kind=ErrorKind.INVALID_JSON,
            error="invalid JSON",
            stage=Stage.PARSE,
            schema="consent.v1",
        )
        for i in range(n)
    ]


def _publish_fn(resources: TestResources) -> PublishDeadLettersFn:
    fn = PublishDeadLettersFn(resources.dead_letter_topic, retry_seconds=30, timeout_seconds=10)
    fn.setup()
    return fn


def _publish(fn: PublishDeadLettersFn, letters: list[DeadLetter]) -> list[DeadLetter]:
    """The letters the DoFn emits: only those Pub/Sub confirmed (their originals get acked)."""
    fn.start_bundle()
    out: list[Any] = []
    for letter in letters:
        out += list(fn.process(letter, timestamp=Timestamp(0), window=GlobalWindow()))
    out += list(fn.finish_bundle())
    return [value.value for value in out]


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_a_failed_dead_letter_publish_is_retried_and_published_once(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    fn = through(pubsub_proxy, monkeypatch, lambda: _publish_fn(resources))
    pubsub_proxy.fail_next("Publish", 2, code)
    letters = _letters(5)
    assert _publish(fn, letters) == letters
    stored = pull_letters(resources.dead_letter_subscription, expected=5, timeout=15)
    assert sorted(s.attributes[MESSAGE_ID_ATTRIBUTE] for s in stored) == [
        f"orig-{i}" for i in range(5)
    ]


def test_a_lost_publish_answer_publishes_again_under_the_same_original_id(
    resources: TestResources, pubsub_proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = PublishDeadLettersFn(resources.dead_letter_topic, retry_seconds=2)
    through(pubsub_proxy, monkeypatch, fn.setup)
    letters = _letters(3)
    # Every answer lost: the DoFn never learns the letters were stored, so it emits nothing
    # (no original is acknowledged) and the bundle fails when its retry budget is spent.
    pubsub_proxy.lose_answers("Publish", 1.0)
    with pytest.raises(gexc.RetryError):
        _publish(fn, letters)
    pubsub_proxy.reset()
    assert _publish(fn, letters) == letters  # the bundle again, answered this time
    stored = pull_letters(resources.dead_letter_subscription, timeout=15)
    originals = [s.attributes[MESSAGE_ID_ATTRIBUTE] for s in stored]
    assert len(originals) > 3  # at least once: copies of the same letters
    assert set(originals) == {"orig-0", "orig-1", "orig-2"}  # each names its one original


@pytest.mark.parametrize("code", PERMANENT, ids=_name)
def test_a_refused_dead_letter_publish_stops_and_emits_nothing(
    resources: TestResources,
    pubsub_proxy: PubSubFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    fn = through(pubsub_proxy, monkeypatch, lambda: _publish_fn(resources))
    pubsub_proxy.fail_next("Publish", 1, code)
    with pytest.raises(RefusedError) as refused:
        _publish(fn, _letters(2))
    assert_refusal(refused.value, resources.dead_letter_topic, code)
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []
