"""Rollups: per-key, per-window aggregates with late updates and no silent late drop.

    events -> Observe (compact facts, keyed by (kind, domain|device))
           -> LatenessGate: too late -> `too_late` output (dead letter), else on
           -> WindowInto(FixedWindows, allowed lateness, late firings, discarding)
           -> CombinePerKey (each pane: what is new since the previous one)
           -> Accumulate (state per key and window: the whole window so far)
           -> RollupRow (cells at the window's end + update number in ms) -> the sink

Beam gives a DoFn no view of the watermark, and a windowed GroupByKey silently drops what
arrives after its window expired. The gate makes that drop visible: per key it keeps one
event-time timer at the earliest pending window expiry (window end + allowed lateness). A
pending timer holds the gate's output watermark, so the combine downstream cannot expire a
window the gate still lets elements into; once the timer fired, the watermark has passed
that expiry, and any later element for such a window is provably too late.

Panes are discarding and the accumulation is a stateful DoFn rather than the runner's
ACCUMULATING mode, because Prism (v2.77.0) never fires late panes in accumulating mode: the
elements it retains for later panes pin the aggregation's input watermark inside the window
(engine/elementmanager.go minPendingTimestampLocked counts them), so `endOfWindowReached` is
false for every late element and the late trigger waits for the window to expire (measured:
late elements 3 and 4 of a TestStream produced no pane on Prism, panes 1 and 2 on the
DirectRunner). Discarding panes retain nothing. Accumulators are unions keyed by event
identity, so merging a pane twice (a retried bundle) changes nothing.
"""

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger, userstate
from apache_beam.transforms.window import (
    BoundedWindow,
    FixedWindows,
    GlobalWindows,
    TimestampedValue,
)
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.base import format_rfc3339_millis
from schemas.rollup import Accumulator, RollupRow, new_accumulator, observe, rollup_row
from stream import metrics
from stream.messages import DeadLetter, ErrorKind, RawMessage, Stage, ValidEvent

TOO_LATE = "too_late"
ROWS = "rows"

# ((kind, key), (fact, message_id, data, attributes, schema)): what crosses the shuffle.
Keyed = tuple[tuple[str, str], tuple[Any, str, bytes, dict[str, str], str]]


@no_annotations
def _observe(event: ValidEvent) -> Iterator[Keyed]:
    observed = observe(event.event)
    if observed is not None:
        kind, key, fact = observed
        raw = event.raw
        yield (kind, key), (fact, raw.message_id, raw.data, raw.attributes, event.event.schema_name)


def window_expiry(end_micros: int, lateness_micros: int) -> int:
    """When a window stops accepting late data: end - 1 ms + allowed lateness (see the gate)."""
    return end_micros - 1000 + lateness_micros


EXPIRIES = userstate.BagStateSpec("expiries", VarIntCoder())  # pending window expiries
EXPIRED = userstate.ReadModifyWriteStateSpec("expired_up_to", VarIntCoder())
TIMER = userstate.TimerSpec("expiry", userstate.TimeDomain.WATERMARK)
_EXPIRIES = beam.DoFn.StateParam(EXPIRIES)
_EXPIRED = beam.DoFn.StateParam(EXPIRED)
_TIMER = beam.DoFn.TimerParam(TIMER)


class LatenessGate(beam.DoFn):
    """Passes elements whose window can still be updated; tags the others `too_late`."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._window = int(window.total_seconds() * 1_000_000)
        self._lateness = int(lateness.total_seconds() * 1_000_000)
        self._too_late = metrics.counter("rollup_too_late")
        # key -> (expired up to, pending expiries), read once per key and bundle: every
        # state read is a round trip to the runner (Prism gives the SDK no cache tokens).
        self._seen: dict[tuple[str, str], tuple[int, set[int]]] = {}

    def start_bundle(self) -> None:
        self._seen = {}

    def _expiry(self, event_micros: int) -> int:
        # A window expires at max_timestamp() + allowed lateness; the timer there holds the
        # watermark where the windowed combine still accepts the element. In milliseconds
        # (end - 1 ms, not Python's end - 1 us): Prism keeps time in ms and fires a timer set
        # at ...999999 us with the timestamp ...999000, so a us expiry never looked expired
        # and the timer re-fired forever. Earlier is safe: it only holds the watermark sooner.
        start = event_micros - event_micros % self._window
        return window_expiry(start + self._window, self._lateness)

    @no_annotations
    def process(
        self,
        element: Keyed,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        expiries: Any = _EXPIRIES,
        expired: Any = _EXPIRED,
        timer: Any = _TIMER,
    ) -> Iterator[Any]:
        expiry = self._expiry(timestamp.micros)
        key = element[0]
        if key not in self._seen:
            self._seen[key] = (expired.read() or 0, set(expiries.read()))
        expired_up_to, pending = self._seen[key]
        if expiry <= expired_up_to:
            self._too_late.inc()
            yield TaggedOutput(TOO_LATE, TimestampedValue(element, timestamp))
            return
        if expiry not in pending:
            expiries.add(expiry)
            if not pending or expiry < min(pending):
                timer.set(Timestamp(micros=expiry))  # holds the watermark below the expiry
            pending.add(expiry)
        yield TimestampedValue(element, timestamp)

    @userstate.on_timer(TIMER)
    def on_expiry(
        self,
        fired: Timestamp = beam.DoFn.TimestampParam,
        expiries: Any = _EXPIRIES,
        expired: Any = _EXPIRED,
        timer: Any = _TIMER,
    ) -> None:
        now = fired.micros
        self._seen.clear()  # state changes here: forget what this bundle read
        pending = sorted(e for e in set(expiries.read()) if e > now)
        expiries.clear()
        for expiry in pending:
            expiries.add(expiry)
        expired.write(max(expired.read() or 0, now))
        if pending:
            timer.set(Timestamp(micros=pending[0]))


class _Aggregate(beam.CombineFn):
    """Merges facts into the kind's accumulator (distinct by event identity)."""

    def create_accumulator(self) -> Accumulator | None:
        return None

    def add_input(self, acc: Accumulator | None, element: tuple[str, Any]) -> Accumulator:
        kind, fact = element
        acc = acc if acc is not None else new_accumulator(kind)
        acc.add(fact)
        return acc

    def merge_accumulators(self, accumulators: Iterable[Accumulator | None]) -> Accumulator | None:
        merged: Accumulator | None = None
        for acc in accumulators:
            if acc is None:
                continue
            if merged is None:
                merged = acc
            else:
                merged.merge(acc)  # type: ignore[arg-type]
        return merged

    def extract_output(self, acc: Accumulator | None) -> Accumulator | None:
        return acc


@no_annotations
def _fact_with_kind(element: Keyed) -> tuple[tuple[str, str], tuple[str, Any]]:
    (kind, key), (fact, *_rest) = element
    return (kind, key), (kind, fact)


# ((kind, key, window start us, window end us), pane): the accumulation's key carries the window.
Windowed = tuple[tuple[str, str, int, int], Accumulator | None]


@no_annotations
def _key_by_window(
    element: tuple[tuple[str, str], Accumulator | None],
    window: BoundedWindow = beam.DoFn.WindowParam,
) -> Iterator[Windowed]:
    (kind, key), delta = element
    if delta is not None:
        yield (kind, key, window.start.micros, window.end.micros), delta


ACCUMULATED = userstate.ReadModifyWriteStateSpec("accumulated", PickleCoder())
UPDATES = userstate.ReadModifyWriteStateSpec("updates", VarIntCoder())
CLEANUP = userstate.TimerSpec("cleanup", userstate.TimeDomain.WATERMARK)
_ACCUMULATED = beam.DoFn.StateParam(ACCUMULATED)
_UPDATES = beam.DoFn.StateParam(UPDATES)
_CLEANUP = beam.DoFn.TimerParam(CLEANUP)


class Accumulate(beam.DoFn):
    """Merges each pane into the window's state and emits the whole window's value.

    Runs in the global window with the window in the key, and clears its state with a timer
    at the window's expiry: Prism (v2.77.0) garbage-collects a stateful DoFn's per-window
    state as soon as the watermark passes the window's end, ignoring the allowed lateness
    (engine/elementmanager.go updateWatermarks uses a zero WinStrat for non-aggregate
    stages), which lost the accumulated value before the late panes arrived. The update
    number, kept in the same state, makes each emission's cell timestamp newer than the
    previous one's: the newest write wins whatever order the sink's bundles finish in, and a
    retried bundle starts again from the committed state, so it rewrites the same cells.
    """

    def __init__(self, lateness: timedelta) -> None:
        self._lateness = int(lateness.total_seconds() * 1_000_000)

    @no_annotations
    def process(
        self,
        element: Windowed,
        accumulated: Any = _ACCUMULATED,
        updates: Any = _UPDATES,
        cleanup: Any = _CLEANUP,
    ) -> Iterator[RollupRow]:
        (kind, key, start, end), delta = element
        if delta is None:
            return
        whole: Accumulator | None = accumulated.read()
        if whole is None:
            whole = delta
            # After the window's expiry the combine emits nothing more for it.
            cleanup.set(Timestamp(micros=window_expiry(end, self._lateness)))
        else:
            whole.merge(delta)  # type: ignore[arg-type]
        update = updates.read() or 0
        accumulated.write(whole)
        updates.write(update + 1)
        metrics.counter("rollup_panes").inc()
        yield rollup_row(kind, key, whole, start, end, update)

    @userstate.on_timer(CLEANUP)
    def on_cleanup(
        self,
        accumulated: Any = _ACCUMULATED,
        updates: Any = _UPDATES,
    ) -> None:
        accumulated.clear()
        updates.clear()


class _TooLateLetter(beam.DoFn):
    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._window = window
        self._lateness = lateness

    @no_annotations
    def process(
        self, element: Keyed, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[DeadLetter]:
        (kind, key), (_fact, message_id, data, attributes, schema) = element
        event_time = timestamp.to_utc_datetime(has_tz=True)
        yield DeadLetter(
            raw=RawMessage(data=data, attributes=attributes, message_id=message_id),
            kind=ErrorKind.TOO_LATE,
            error=(
                f"event time {format_rfc3339_millis(event_time)} of {kind} {key!r} arrived "
                f"after its {self._window.total_seconds():.0f}s window closed (allowed "
                f"lateness {self._lateness.total_seconds():.0f}s): the rollup excludes it; "
                "its row was written"
            ),
            stage=Stage.ROLLUP,
            schema=schema,
        )


class Rollups(beam.PTransform):
    """Per-window aggregate rows (`rows`) and the events too late for them (`too_late`)."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        super().__init__()
        self._window = window
        self._lateness = lateness

    @no_annotations
    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        gated = (
            events
            # Typed key: state is keyed, and keys must encode deterministically (str tuple).
            | "Observe" >> beam.FlatMap(_observe).with_output_types(tuple[tuple[str, str], Any])
            | "LatenessGate"
            >> beam.ParDo(LatenessGate(self._window, self._lateness)).with_outputs(
                TOO_LATE, main="on_time"
            )
        )
        rows = (
            gated.on_time
            | "WindowAndBuffer"
            >> beam.WindowInto(
                FixedWindows(self._window.total_seconds()),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=self._lateness.total_seconds()),
            )
            # Typed key again: Accumulate is stateful (str-tuple keys encode deterministically).
            | "Facts"
            >> beam.Map(_fact_with_kind).with_output_types(tuple[tuple[str, str], tuple[str, Any]])
            | "Aggregate" >> beam.CombinePerKey(_Aggregate())
            | "KeyByWindow"
            >> beam.FlatMap(_key_by_window).with_output_types(tuple[tuple[str, str, int, int], Any])
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "Accumulate" >> beam.ParDo(Accumulate(self._lateness))
        )
        too_late = gated[TOO_LATE] | "TooLateLetters" >> beam.ParDo(
            _TooLateLetter(self._window, self._lateness)
        )
        return {ROWS: rows, TOO_LATE: too_late}
