"""WriteRows and WriteRollups: the Beam side of the batch writer (one per table and bundle).

A written row's message goes on to be acknowledged; a row refused for good becomes a dead
letter; backoff time is counted as `cumulativeThrottlingSeconds` while it happens. Past the
retry budget, or when Bigtable refuses the request, the bundle fails and is retried whole.
"""

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.cloud.bigtable.data import BigtableDataClient

from stream.pipeline import metrics
from stream.pipeline.config import BigtableTarget
from stream.pipeline.io import clients
from stream.pipeline.io.batch_writer import (
    BatchWriter,
    Outcome,
    RefusedWriteError,
    Row,
    TransientWriteError,
)
from stream.pipeline.letters import rollup_rejected, write_rejected
from stream.pipeline.messages import DeadLetter, ValidEvent, Written
from stream.pipeline.outputs import Writes
from stream.pipeline.rollups.rows import RollupRow

REJECTED = "rejected"
E = TypeVar("E")  # the element type: ValidEvent or RollupRow


@dataclass(frozen=True, slots=True)
class _Pending(Generic[E]):
    element: E
    timestamp: Timestamp
    window: BoundedWindow


@dataclass(frozen=True, slots=True)
class _Elements(Generic[E]):
    """How one element type is written: its row, what a written one emits, its dead letter."""

    row: Callable[[E], Row]
    written: Callable[[E, str], Written | None]
    rejected: Callable[[E, BaseException | None], DeadLetter]
    written_counter: str
    record_ingest_time: bool


class _Carry:
    """Backoff seconds not yet counted, per DoFn class and process.

    The counter counts whole seconds; the fractions of every writer of a class add up here
    (writers of one process share it), so the counted total is exact to under a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[type, float] = {}

    def add(self, owner: type, seconds: float) -> int:
        """Add `seconds`; returns the whole seconds to count now."""
        with self._lock:
            total = self._seconds.get(owner, 0.0) + seconds
            whole = int(total)
            self._seconds[owner] = total - whole
            return whole


_THROTTLE_CARRY = _Carry()


class _WriteFn(beam.DoFn, Generic[E]):
    """Buffers the bundle's elements per table and flushes them with a BatchWriter each."""

    _client: BigtableDataClient  # from setup(): shared per process, never pickled

    def __init__(self, target: BigtableTarget, elements: _Elements[E]) -> None:
        self._target = target
        self._elements = elements
        self._writers: dict[str, BatchWriter[_Pending[E]]] = {}
        self._written = metrics.counter(elements.written_counter)
        self._rejected = metrics.counter(metrics.WRITE_REJECTED)
        self._retryable = metrics.counter(metrics.WRITE_RETRYABLE_FAILURES)
        self._refused = metrics.counter(metrics.WRITE_REFUSED)
        self._retried = metrics.counter(metrics.WRITE_RETRIED_ROWS)
        self._batches = metrics.counter(metrics.WRITE_BATCHES)
        self._latency = metrics.distribution(metrics.WRITE_BATCH_MS)
        # Namespaced by the DoFn class, as Beam's own I/Os do (stream/pipeline/metrics.py).
        self._throttled = beam.metrics.Metrics.counter(type(self), metrics.THROTTLING_SECONDS)
        self._throttled_ms = metrics.counter(metrics.WRITE_THROTTLED_MS)

    def setup(self) -> None:
        self._client = clients.bigtable(self._target.project)
        self._writers = {}

    def _throttled_for(self, seconds: float) -> None:
        """Count backoff time as it happens, so the platform sees it during a long outage."""
        self._throttled_ms.inc(math.ceil(seconds * 1000))
        whole = _THROTTLE_CARRY.add(type(self), seconds)
        if whole:
            self._throttled.inc(whole)

    def _writer(self, table_id: str) -> BatchWriter[_Pending[E]]:
        if table_id not in self._writers:
            self._writers[table_id] = BatchWriter(
                self._client.get_table(self._target.instance, table_id),
                self._target.batch_rows,
                self._target.timeout,
                self._elements.record_ingest_time and self._target.record_ingest_time,
                retry=self._target.retry,
                on_throttled=self._throttled_for,
                raw_entries=self._target.raw_entries,
            )
        return self._writers[table_id]

    @no_annotations
    def process(
        self,
        element: E,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        window: BoundedWindow = beam.DoFn.WindowParam,
    ) -> Iterator[WindowedValue | TaggedOutput]:
        row = self._elements.row(element)
        writer = self._writer(self._target.table_id(row.table.group))
        writer.add(row, _Pending(element, timestamp, window))
        if writer.full:
            yield from self._flush(writer)

    def finish_bundle(self) -> Iterator[WindowedValue | TaggedOutput]:
        for writer in self._writers.values():
            yield from self._flush(writer)

    def _flush(self, writer: BatchWriter[_Pending[E]]) -> Iterator[WindowedValue | TaggedOutput]:
        before, retried_before = writer.batches, writer.retried_rows
        try:
            outcomes = list(writer.flush())
        except TransientWriteError as exc:
            self._retryable.inc(exc.rows)
            raise
        except RefusedWriteError:
            self._refused.inc()
            raise
        finally:
            self._batches.inc(writer.batches - before)
            self._retried.inc(writer.retried_rows - retried_before)
            for millis in writer.batch_millis:
                self._latency.update(millis)
        for outcome in outcomes:
            yield from self._output(outcome, writer)

    def _output(
        self, outcome: Outcome[_Pending[E]], writer: BatchWriter[_Pending[E]]
    ) -> Iterator[WindowedValue | TaggedOutput]:
        pending = outcome.item
        if outcome.written:
            self._written.inc()
            table_id = self._target.table_id(outcome.row.table.group)
            written = self._elements.written(pending.element, table_id)
            if written is not None:
                yield WindowedValue(written, pending.timestamp, [pending.window])
        else:
            self._rejected.inc()
            dead = self._elements.rejected(pending.element, outcome.error)
            yield TaggedOutput(REJECTED, WindowedValue(dead, pending.timestamp, [pending.window]))


def _event_row(event: ValidEvent) -> Row:
    return event.event


def _event_written(event: ValidEvent, table_id: str) -> Written:
    return Written(
        table_id=table_id,
        row_key=event.event.row_key(),
        timestamp_micros=event.event.timestamp_micros(),
        raw=event.raw,
    )


EVENTS: _Elements[ValidEvent] = _Elements(
    row=_event_row,
    written=_event_written,
    rejected=write_rejected,
    written_counter=metrics.WRITTEN,
    record_ingest_time=True,
)


def _rollup_row(row: RollupRow) -> Row:
    return row


def _rollup_written(row: RollupRow, table_id: str) -> None:
    return None  # nothing to acknowledge: no message stands behind an aggregate


def _rollup_rejected(row: RollupRow, cause: BaseException | None) -> DeadLetter:
    return rollup_rejected(row.kind, row.row_key(), row.values, cause)


ROLLUPS: _Elements[RollupRow] = _Elements(
    row=_rollup_row,
    written=_rollup_written,
    rejected=_rollup_rejected,
    written_counter=metrics.ROLLUP_ROWS_WRITTEN,
    record_ingest_time=False,
)


class WriteRowsFn(_WriteFn[ValidEvent]):
    """Main output: Written; tagged `rejected`: DeadLetters for rows refused for good."""

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__(target, EVENTS)


class WriteRollupsFn(_WriteFn[RollupRow]):
    """Writes RollupRows; only refusals come out (tagged `rejected`)."""

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__(target, ROLLUPS)


class _Write(beam.PTransform):
    def __init__(self, fn: beam.DoFn) -> None:
        super().__init__()
        self._fn = fn

    @no_annotations
    def expand(self, elements: beam.PCollection) -> Writes:
        outputs = elements | "Mutate" >> beam.ParDo(self._fn).with_outputs(REJECTED, main="written")
        return Writes(written=outputs.written, rejected=outputs[REJECTED])


class WriteRows(_Write):
    """Write events as rows: Writes(written: Written, rejected: DeadLetter)."""

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__(WriteRowsFn(target))


class WriteRollups(_Write):
    """Write rollup rows: Writes(written: nothing, rejected: DeadLetter)."""

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__(WriteRollupsFn(target))


__all__ = ["REJECTED", "WriteRollups", "WriteRollupsFn", "WriteRows", "WriteRowsFn"]
