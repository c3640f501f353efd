"""Rollups: per-key, per-window aggregates with late updates and no silent late drop.

    events -> Observe (compact facts, keyed by (kind, domain|device))
           -> LatenessGate: too late -> `too_late` output (dead letter), else on
           -> WindowInto(FixedWindows, allowed lateness, late firings, discarding)
           -> CombinePerKey (each pane: what is new since the previous one)
           -> Accumulate (state per key and window: the whole window so far)
           -> RollupRow (cells at the window's end + update number in ms) -> the sink

Discarding panes and a global-window accumulation, not ACCUMULATING mode: two Prism v2.77.0
bugs (stream/DESIGN.md, "Rollups on Prism").
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.transforms import trigger
from apache_beam.transforms.window import BoundedWindow, FixedWindows, GlobalWindows
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.base import format_rfc3339_millis
from stream.pipeline.deadletters import letter
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage
from stream.pipeline.outputs import RollupOutputs
from stream.pipeline.rollups.accumulate import Accumulate, Windowed
from stream.pipeline.rollups.accumulators import Accumulator, Aggregate
from stream.pipeline.rollups.facts import Keyed, keyed_facts
from stream.pipeline.rollups.gate import TOO_LATE, LatenessGate


@no_annotations
def _fact_with_kind(element: Keyed) -> tuple[tuple[str, str], tuple[str, Any]]:
    (kind, key), (fact, *_rest) = element
    return (kind, key), (kind, fact)


@no_annotations
def _key_by_window(
    element: tuple[tuple[str, str], Accumulator | None],
    window: BoundedWindow = beam.DoFn.WindowParam,
) -> Iterator[Windowed]:
    (kind, key), delta = element
    if delta is not None:
        yield (kind, key, window.start.micros, window.end.micros), delta


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
        error = (
            f"event time {format_rfc3339_millis(event_time)} of {kind} {key!r} arrived "
            f"after its {self._window.total_seconds():.0f}s window closed (allowed "
            f"lateness {self._lateness.total_seconds():.0f}s): the rollup excludes it; "
            "its row was written"
        )
        raw = RawMessage(data=data, attributes=attributes, message_id=message_id)
        yield letter(raw, ErrorKind.TOO_LATE, error, Stage.ROLLUP, schema)


class Rollups(beam.PTransform):
    """RollupOutputs: per-window aggregate rows, and the events too late for them."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        super().__init__()
        self._window = window
        self._lateness = lateness

    @no_annotations
    def expand(self, events: beam.PCollection) -> RollupOutputs:
        gated = (
            events
            # Typed key: state is keyed, and keys must encode deterministically (str tuple).
            | "Observe" >> beam.FlatMap(keyed_facts).with_output_types(tuple[tuple[str, str], Any])
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
            | "Aggregate" >> beam.CombinePerKey(Aggregate())
            | "KeyByWindow"
            >> beam.FlatMap(_key_by_window).with_output_types(tuple[tuple[str, str, int, int], Any])
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "Accumulate" >> beam.ParDo(Accumulate(self._lateness))
        )
        too_late = gated[TOO_LATE] | "TooLateLetters" >> beam.ParDo(
            _TooLateLetter(self._window, self._lateness)
        )
        return RollupOutputs(rows=rows, too_late=too_late)
