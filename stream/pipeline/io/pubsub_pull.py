"""A Pub/Sub source for portable runners (Prism, Flink, Spark): an unbounded splittable DoFn.

It pulls batches and never acknowledges: each message carries its ack id to the Acknowledge
stage, and is held by the lease keeper until then. Why each choice: stream/DESIGN.md, "The
pull source on Prism".
"""

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Duration, Timestamp
from google.api_core import exceptions as gexc
from google.api_core.retry import exponential_sleep_generator
from google.cloud import pubsub_v1
from google.pubsub_v1 import PullResponse

from schemas.base import from_epoch_micros
from stream.pipeline import metrics
from stream.pipeline.config import PubSubEndpoints
from stream.pipeline.io import clients, leases, pull_pacing
from stream.pipeline.io.pubsub_ack import AcknowledgeFn
from stream.pipeline.io.pubsub_calls import (
    REFUSED_PUBSUB_ERRORS,
    SUBSCRIBER_ROLE,
    TRANSIENT_PUBSUB_ERRORS,
    refused_by_pubsub,
)
from stream.pipeline.messages import RawMessage

UNBOUNDED = 2**62
IDLE_POLL = Duration(seconds=0.2)
# A long poll's deadline: long enough that a server never answers after it (the emulator
# answers an empty poll ~1 s before), short enough that an idle reader's watermark moves
# (DESIGN.md, "The long poll").
PULL_TIMEOUT_SECONDS = 2.5
# A pull that brings fewer than this took all that was at hand: more only comes with time.
PAGE = 50
# After a failed pull: wait uniform(0, cap) before the next, the cap doubling to 10 s.
PULL_BACKOFF_INITIAL_SECONDS = 0.2
PULL_BACKOFF_MAXIMUM_SECONDS = 10.0
_LOG = logging.getLogger(__name__)


class _Pulls(OffsetRestrictionTracker):
    """Positions are pull rounds; only checkpoints split it (DESIGN.md: no dynamic splitting)."""

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if fraction_of_remainder > 0:
            return None
        return super().try_split(0)  # type: ignore[no-any-return]

    def current_progress(self) -> RestrictionProgress | None:
        return None  # "unknown" on purpose: a reported progress can be NaN (DESIGN.md)

    def is_bounded(self) -> bool:
        return False


class _PullRestrictions(RestrictionProvider):
    def initial_restriction(self, element: int) -> OffsetRange:
        return OffsetRange(0, UNBOUNDED)

    def create_tracker(self, restriction: OffsetRange) -> _Pulls:
        return _Pulls(restriction)

    def restriction_size(self, element: int, restriction: OffsetRange) -> float:
        return 1.0

    def split(self, element: int, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction

    def truncate(self, element: int, restriction: OffsetRange) -> None:
        return None  # on drain: stop pulling; unacked messages stay in the subscription


class _Watermarks(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: int, restriction: OffsetRange) -> None:
        return None

    def create_watermark_estimator(self, state: Timestamp | None) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(state)


_RESTRICTION = beam.DoFn.RestrictionParam(_PullRestrictions())
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(_Watermarks())


def _to_raw(received: Any) -> tuple[RawMessage, Timestamp]:
    """From the raw protobuf ReceivedMessage (proto-plus wrappers cost ~10% of the CPU)."""
    message = received.message
    stamp = message.publish_time
    micros = stamp.seconds * 1_000_000 + stamp.nanos // 1000
    raw = RawMessage(
        data=message.data,
        attributes=dict(message.attributes),
        message_id=message.message_id,
        publish_time=from_epoch_micros(micros),
        ack_id=received.ack_id,
    )
    return raw, Timestamp(micros=micros)


class PullMessagesFn(beam.DoFn):
    """One pull per process() call, then a checkpoint.

    Each bundle is one batch, so the fused downstream stages write and acknowledge it
    before the next pull (backpressure).

    Watermark: the oldest publish time of the last batch (monotone), or now when the
    subscription is idle. Event times come from the payload later; elements older than the
    watermark only matter for windowed aggregates, never for raw rows.
    """

    _subscriber: pubsub_v1.SubscriberClient  # from setup(): shared per process
    _leases: leases.LeaseKeeper  # from setup(): shared per process and subscription

    def __init__(
        self,
        endpoints: PubSubEndpoints,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        leads: bool = True,
    ) -> None:
        """`clock`, `sleep`: monotonic seconds, for a batch's wait (tests pass fakes).

        `leads`: reader 0 leads (long polls, waits to fill batches). Not in a second ingest
        process: there reader 0 only probes what is at hand, every few seconds, and leads
        while it finds full batches (a backlog the first process alone cannot take).
        """
        self._endpoints = endpoints
        self._leads = leads
        self._clock = clock
        self._sleep = sleep
        self._pulled = metrics.counter(metrics.PULLED)
        self._empty = metrics.counter(metrics.EMPTY_PULLS)
        self._failed = metrics.counter(metrics.PULL_FAILURES)
        self._redelivered = metrics.counter(metrics.REDELIVERED_WHILE_HELD)
        self._lag = metrics.gauge(metrics.SOURCE_LAG_MS)
        self._fill_gauge = metrics.gauge(metrics.PULL_FILL_PERCENT)
        self._held = metrics.gauge(metrics.LEASES_HELD)

    def setup(self) -> None:
        self._subscriber = clients.subscriber()
        self._leases = leases.keeper(self._endpoints.subscription)
        self._readers = pull_pacing.readers(self._endpoints.subscription)
        self._owner = leases.new_owner()
        self._backoff: Iterator[float] | None = None
        self._yielded = False

    def teardown(self) -> None:
        # Called when the SDK discards this DoFn, e.g. after its bundle failed: the messages
        # that bundle held are given back at once instead of after their ack deadline.
        keeper: leases.LeaseKeeper | None = getattr(self, "_leases", None)
        if keeper is not None:
            keeper.release(self._owner, note="this reader held (ack deadline 0)")

    def start_bundle(self) -> None:
        # No long poll once a reader of this bundle yielded a batch (DESIGN.md).
        self._yielded = False

    def _pull(self, max_messages: int, at_hand_only: bool = False) -> list[Any]:
        request = {"subscription": self._endpoints.subscription, "max_messages": max_messages}
        try:
            with warnings.catch_warnings():
                # deprecated, but exactly "what is at hand" (DESIGN.md, "Filling a batch")
                warnings.simplefilter("ignore", DeprecationWarning)
                response = self._subscriber.pull(
                    request={**request, "return_immediately": at_hand_only},
                    retry=None,  # every failure is this reader's backoff (see process)
                    timeout=PULL_TIMEOUT_SECONDS,
                )
        except gexc.DeadlineExceeded:
            return []  # nothing arrived in time: try again after a checkpoint
        except REFUSED_PUBSUB_ERRORS as exc:
            subscription = self._endpoints.subscription
            raise refused_by_pubsub(exc, "pull from", subscription, SUBSCRIBER_ROLE) from exc
        return list(PullResponse.pb(response).received_messages)  # raw protobuf: see _to_raw

    def _fill(self, reader: int, at_hand_only: bool = False) -> list[Any]:
        """One batch: a pull, what else is at hand, and a wait for more if it is partial.

        A server answers a pull with what it has at hand (the emulator: at most 100), and
        each batch becomes one bundle whose fixed cost is paid per bundle. So a batch takes
        all that is at hand at once (a backlog fills it) and, when that runs dry before the
        batch is full, waits once for more as long as the reader's batch wait says (none
        in a bundle that already yielded a batch: its rows wait for the bundle's end).
        """
        wanted = self._endpoints.pull_max_messages
        wait = self._readers.batch_wait(reader, self._endpoints.pull_fill.total_seconds(), wanted)
        received = self._pull(wanted, at_hand_only)  # a long poll, unless told otherwise
        brought, asked, waited = len(received), wanted, at_hand_only
        while received and len(received) < wanted:
            if brought < min(PAGE, asked):  # all that was at hand is in
                if waited:
                    break
                waited = True
                delay = wait.wait(len(received))
                if delay <= 0:
                    break
                self._sleep(delay)
            asked = wanted - len(received)
            try:
                more = self._pull(asked, at_hand_only=True)
            except TRANSIENT_PUBSUB_ERRORS:
                break  # keep what is in hand; the next pull tells whether Pub/Sub is back
            received.extend(more)
            brought = len(more)
        wait.seen(len(received), self._clock())
        return received

    def _pull_failed(self, exc: Exception) -> Duration:
        """A transient pull error: how long this reader waits before pulling again."""
        self._failed.inc()
        if self._backoff is None:
            self._backoff = exponential_sleep_generator(
                PULL_BACKOFF_INITIAL_SECONDS, PULL_BACKOFF_MAXIMUM_SECONDS
            )
        delay = next(self._backoff)
        _LOG.warning(
            "pull from %s failed, again in %.1fs: %s", self._endpoints.subscription, delay, exc
        )
        return Duration(seconds=delay)

    def _hold(self, received: list[Any]) -> bool:
        """Hand the batch's leases to the keeper before any message goes downstream.

        False: the job has ended (its keeper is closed) and the batch was given back.
        """
        redelivered = self._leases.hold(
            self._owner,
            [(item.ack_id, item.message.message_id) for item in received],
            self._endpoints.max_lease.total_seconds(),
        )
        if redelivered is None:
            _LOG.info("gave back %d messages pulled after the job ended", len(received))
            return False
        self._held.set(self._leases.held)
        if redelivered:
            self._redelivered.inc(redelivered)
            _LOG.warning(
                "%d messages were pulled again while this process still held them: their "
                "lease ran out (see --max_lease_seconds), or Pub/Sub delivered them twice",
                redelivered,
            )
        return True

    @beam.DoFn.unbounded_per_element()
    @no_annotations
    def process(
        self,
        reader: int,
        tracker: _Pulls = _RESTRICTION,
        watermark: ManualWatermarkEstimator = _WATERMARK,
    ) -> Iterator[TimestampedValue]:
        position = tracker.current_restriction().start
        if not tracker.try_claim(position):
            return
        self._leases.raise_refusal()  # the keeper's calls were refused: stop before pulling
        prober = reader == 0 and not self._leads
        parks = self._readers.helper_parks(self._clock(), prober) if reader or prober else 0.0
        if parks and reader:
            self._park(tracker, watermark, parks)
            return
        # In flight until the batch is held or given back: the job's end waits for both.
        with self._leases.pulling():
            try:
                # A prober (parks > 0) takes only what is at hand, and no wait.
                received = self._fill(reader, at_hand_only=self._yielded or parks > 0)
            except TRANSIENT_PUBSUB_ERRORS as exc:
                # The watermark stays: what is waiting in the subscription is not known now.
                tracker.defer_remainder(self._pull_failed(exc))
                return
            held = not received or self._hold(received)
        self._backoff = None
        now = Timestamp.now()
        if not received:
            self._empty.inc()
            self._fill_gauge.set(0)
            watermark.set_watermark(max(now, watermark.current_watermark() or now))
            self._pulled_as(reader, 0, watermark)
            if parks:
                self._probed(tracker, watermark, parks)
            else:
                tracker.defer_remainder(IDLE_POLL)
            return
        if not held:
            return  # the job ended: nothing goes downstream, nothing is deferred
        oldest = now
        for item in received:
            raw, published = _to_raw(item)
            oldest = min(oldest, published)
            yield TimestampedValue(raw, published)
        self._yielded = True
        self._pulled.inc(len(received))
        self._lag.set(int((now - oldest).micros // 1000))
        # A full pull means more is waiting: with source_lag_ms, the backlog signal.
        self._fill_gauge.set(100 * len(received) // self._endpoints.pull_max_messages)
        current = watermark.current_watermark()
        watermark.set_watermark(oldest if current is None else max(current, oldest))
        self._pulled_as(reader, len(received), watermark)
        if parks:
            self._probed(tracker, watermark, parks)
        else:
            tracker.defer_remainder()

    def _probed(self, tracker: _Pulls, watermark: ManualWatermarkEstimator, parks: float) -> None:
        """The prober of a second process, after a probe: back after `parks` seconds.

        Its stage's watermark moves on by the park: its next probe is then, and the rollups
        take the least of both processes' watermarks, which the leading process sets.
        """
        ahead = Timestamp.now() + Duration(seconds=parks)
        watermark.set_watermark(max(ahead, watermark.current_watermark() or ahead))
        tracker.defer_remainder(Duration(seconds=parks))

    def _pulled_as(self, reader: int, count: int, watermark: ManualWatermarkEstimator) -> None:
        """The lead tells the helpers whether its batch was full, and its watermark."""
        if reader == 0:
            full = count >= self._endpoints.pull_max_messages
            mark = watermark.current_watermark()
            self._readers.lead_pulled(count, full, mark, self._clock())

    def _park(self, tracker: _Pulls, watermark: ManualWatermarkEstimator, seconds: float) -> None:
        """A helper while the lead's batches are partial: no pull until its next check-in.

        It reports the lead's watermark: never ahead of the lead's, and (Prism takes a stage's
        watermark from the latest bundle's estimate) never holding it back (DESIGN.md).
        """
        lead, current = self._readers.watermark, watermark.current_watermark()
        if lead is not None:
            watermark.set_watermark(lead if current is None else max(current, lead))
        tracker.defer_remainder(Duration(seconds=seconds))


class PullMessages(beam.PTransform):
    """PBegin -> PCollection[RawMessage], each carrying its ack id: `readers` pullers."""

    def __init__(self, endpoints: PubSubEndpoints, leads: bool = True) -> None:
        super().__init__()
        self._endpoints = endpoints
        self._leads = leads

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Start" >> beam.Impulse()
            | "Readers" >> beam.FlatMap(_readers, self._endpoints.readers)
            | "Pull" >> beam.ParDo(PullMessagesFn(self._endpoints, leads=self._leads))
        )


def _readers(_: bytes, count: int) -> Iterable[int]:
    return range(count)


class PullSource:
    """Source for portable runners: `readers` concurrent pullers, acks after the write."""

    def __init__(self, endpoints: PubSubEndpoints, leads: bool = True) -> None:
        """`leads`: False for a second ingest process (PullMessagesFn)."""
        self._endpoints = endpoints
        self._leads = leads

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage] (each carrying its ack id)."""
        return PullMessages(self._endpoints, self._leads)

    def acknowledge(self) -> beam.PTransform:
        """PCollection[ack id] -> acknowledged in Pub/Sub (and their leases retired)."""
        return beam.ParDo(AcknowledgeFn(self._endpoints.subscription))
