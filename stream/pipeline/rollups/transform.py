"""Rollups: per-key, per-window aggregates with late updates and no silent late drop.

    events -> PreAggregate (per bundle: facts grouped by (kind, domain|device) and window)
           -> Gate (state per key: the windows it has closed -> `too_late`; the rest on,
              one element per window)
           -> Accumulate (state per key and window: a value when the window is due, then
              one per change, until the window closes)
           -> RollupRow (cells at the window's end + update number in ms) -> the sink
    too_late -> TooLateLetters (dead letters with the raw message; the rows were written)

No windowed GroupByKey: Beam drops what arrives after a window expired, silently, and a DoFn
cannot see the watermark to tell (stream/DESIGN.md, "Rollups").
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from stream.pipeline.config import WORKER_PROCESS_HINTS
from stream.pipeline.letters import too_late
from stream.pipeline.messages import DeadLetter, RawMessage
from stream.pipeline.outputs import RollupOutputs
from stream.pipeline.rollups.accumulate import Accumulate
from stream.pipeline.rollups.facts import Member
from stream.pipeline.rollups.gate import TOO_LATE, Gate
from stream.pipeline.rollups.preaggregate import PreAggregate


class _TooLateLetter(beam.DoFn):
    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._window = window
        self._lateness = lateness

    @no_annotations
    def process(self, element: tuple[str, str, int, Member]) -> Iterator[DeadLetter]:
        kind, key, _start, item = element
        raw = RawMessage(data=item.data, attributes=item.attributes, message_id=item.message_id)
        yield too_late(kind, key, item.event_ms, raw, item.schema, self._window, self._lateness)


class Rollups(beam.PTransform):
    """RollupOutputs: per-window aggregate rows, and the events too late for them."""

    def __init__(self, window: timedelta, lateness: timedelta, own_worker: bool = False) -> None:
        """`own_worker`: the keyed stages in an SDK worker of their own (stream/launch/patches)."""
        super().__init__()
        self._window = window
        self._lateness = lateness
        self._hints = WORKER_PROCESS_HINTS if own_worker else {}

    @no_annotations
    def expand(self, events: beam.PCollection | tuple[beam.PCollection, ...]) -> RollupOutputs:
        """`events`: one PCollection, or one per ingest process (the second in the worker)."""
        copies = events if isinstance(events, tuple) else (events,)
        # PreAggregate stays with the rows (fused with them: events cross no worker boundary);
        # what it emits crosses a shuffle anyway, the place to change workers.
        grouped = [
            pcoll
            # Typed keys: the next steps are stateful; keys must encode deterministically.
            | f"PreAggregate{n + 1 if n else ''}"
            >> beam.ParDo(PreAggregate(self._window, self._lateness))
            .with_output_types(tuple[tuple[str, str], Any])
            .with_resource_hints(**(WORKER_PROCESS_HINTS if n else {}))
            for n, pcoll in enumerate(copies)
        ]
        merged = grouped[0] if len(grouped) == 1 else tuple(grouped) | "Merge" >> beam.Flatten()
        gated = merged | "Gate" >> beam.ParDo(Gate(self._window, self._lateness)).with_output_types(
            tuple[tuple[str, str, int], Any]
        ).with_outputs(TOO_LATE, main="open").with_resource_hints(**self._hints)
        rows = gated.open | "Accumulate" >> beam.ParDo(
            Accumulate(self._window, self._lateness)
        ).with_resource_hints(**self._hints)
        too_late = gated[TOO_LATE] | "TooLateLetters" >> beam.ParDo(
            _TooLateLetter(self._window, self._lateness)
        ).with_resource_hints(**self._hints)
        return RollupOutputs(rows=rows, too_late=too_late)
