"""Rollups: per-key, per-window aggregates with late updates and no silent late drop.

    events -> Observe (compact facts, keyed by (kind, domain|device))
           -> LatenessGate: too late -> `too_late` output (dead letter), else on
           -> WindowInto(FixedWindows, allowed lateness, late firings, accumulating)
           -> CombinePerKey -> RollupRow (cells at the window's end) -> written by the sink

Beam gives a DoFn no view of the watermark, and a windowed GroupByKey silently drops what
arrives after its window expired. The gate makes that drop visible: per key it keeps one
event-time timer at the earliest pending window expiry (window end + allowed lateness). A
pending timer holds the gate's output watermark, so the combine downstream cannot expire a
window the gate still lets elements into; once the timer fired, the watermark has passed
that expiry, and any later element for such a window is provably too late.
"""

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger, userstate
from apache_beam.transforms.window import BoundedWindow, FixedWindows, TimestampedValue
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

    def _expiry(self, event_micros: int) -> int:
        # Exactly Beam's: a window expires at max_timestamp() (end - 1 us) + allowed lateness.
        # The timer there holds the watermark at most at that instant, where the windowed
        # combine still accepts the element.
        start = event_micros - event_micros % self._window
        return start + self._window - 1 + self._lateness

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
        if expiry <= (expired.read() or 0):
            self._too_late.inc()
            yield TaggedOutput(TOO_LATE, TimestampedValue(element, timestamp))
            return
        pending = set(expiries.read())
        if expiry not in pending:
            expiries.add(expiry)
            if not pending or expiry < min(pending):
                timer.set(Timestamp(micros=expiry))  # holds the watermark below the expiry
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


class _ToRow(beam.DoFn):
    @no_annotations
    def process(
        self,
        element: tuple[tuple[str, str], Accumulator | None],
        window: BoundedWindow = beam.DoFn.WindowParam,
    ) -> Iterator[RollupRow]:
        (kind, key), acc = element
        if acc is not None:
            metrics.counter("rollup_panes").inc()
            yield rollup_row(kind, key, acc, window.start.micros, window.end.micros)


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
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=self._lateness.total_seconds()),
            )
            | "Facts" >> beam.Map(_fact_with_kind)
            | "Aggregate" >> beam.CombinePerKey(_Aggregate())
            | "ToRows" >> beam.ParDo(_ToRow())
        )
        too_late = gated[TOO_LATE] | "TooLateLetters" >> beam.ParDo(
            _TooLateLetter(self._window, self._lateness)
        )
        return {ROWS: rows, TOO_LATE: too_late}
