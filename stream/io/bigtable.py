"""WriteRows: buffer events within a bundle, write them with MutateRows, check every entry."""

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import (
    BigtableDataClient,
    MutationsExceptionGroup,
    RowMutationEntry,
    SetCell,
    Table,
)

from schemas.base import Cell, TableSpec
from schemas.rollup import RollupRow
from stream import metrics
from stream.config import BigtableTarget
from stream.io import clients
from stream.messages import DeadLetter, ErrorKind, RawMessage, Stage, ValidEvent, Written

REJECTED = "rejected"
INGESTED_AT = b"ingested_at"

# Errors that no retry can fix for this row: the row goes to the dead letter.
# Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ABORTED, exhausted retries, ...)
# is transient: the bundle fails and the runner retries it; rows are rewritten identically.
PERMANENT_ERRORS = (
    gexc.InvalidArgument,
    gexc.NotFound,
    gexc.FailedPrecondition,
    gexc.OutOfRange,
)


# Retried by the client itself, per entry, within --write_timeout_seconds. Safe because
# every mutation carries an explicit timestamp (idempotent); the classic client retries the
# same set. The data client's default retries only DEADLINE_EXCEEDED and UNAVAILABLE.
RETRYABLE_ERRORS = (
    gexc.DeadlineExceeded,
    gexc.ServiceUnavailable,
    gexc.Aborted,
    gexc.InternalServerError,
)


class TransientWriteError(RuntimeError):
    """Some rows could not be written for a retryable reason; the bundle must be retried."""


def is_permanent(cause: BaseException | None) -> bool:
    """Whether a per-row failure can never succeed on retry."""
    return isinstance(cause, PERMANENT_ERRORS)


class Row(Protocol):
    """What WriteRowsFn writes: a validated event (MappedEvent) or an aggregate (RollupRow)."""

    @property
    def table(self) -> TableSpec: ...

    def row_key(self) -> str: ...

    def cells(self) -> tuple[Cell, ...]: ...

    def timestamp_micros(self) -> int: ...


def mutation_entry(row: Row, ingest_micros: int | None = None) -> RowMutationEntry:
    """A fresh MutateRows entry for one row: every cell at the row's timestamp.

    Built anew for every attempt from the immutable row, so a retry always sends the
    complete row (never a mutation object a previous attempt consumed).
    """
    ts = row.timestamp_micros()
    cells = row.cells()
    mutations = [SetCell(c.family, c.qualifier, c.value, timestamp_micros=ts) for c in cells]
    if ingest_micros is not None:
        # Same cell timestamp as the event: a rewrite replaces it instead of adding a version.
        mutations.append(
            SetCell(cells[0].family, INGESTED_AT, str(ingest_micros // 1000).encode(), ts)
        )
    return RowMutationEntry(row.row_key().encode(), mutations)


@dataclass(slots=True)
class _Pending:
    element: Any
    timestamp: Timestamp
    window: BoundedWindow


class WriteRowsFn(beam.DoFn):
    """Buffers the bundle's events and flushes them in chunks of `batch_rows` per table.

    Main output: Written; tagged `rejected`: DeadLetter for rows Bigtable refused for good.
    Raises TransientWriteError when rows failed for a retryable reason after the client's
    own retries (bounded by `timeout`), so the runner retries the whole bundle.
    """

    _client: BigtableDataClient  # from setup(): shared per process, never pickled
    _tables: dict[str, Table]

    def __init__(self, target: BigtableTarget) -> None:
        self._target = target
        self._record_ingest_time = target.record_ingest_time
        self._pending: list[_Pending] = []
        self._written = metrics.counter(metrics.WRITTEN)
        self._rejected = metrics.counter(metrics.WRITE_REJECTED)
        self._retryable = metrics.counter(metrics.WRITE_RETRYABLE_FAILURES)
        self._batches = metrics.counter("write_batches")
        self._latency = beam.metrics.Metrics.distribution(metrics.NAMESPACE, "write_batch_ms")

    def setup(self) -> None:
        self._client = clients.bigtable(self._target.project)
        self._tables = {}

    def _table(self, table_id: str) -> Table:
        if table_id not in self._tables:
            self._tables[table_id] = self._client.get_table(self._target.instance, table_id)
        return self._tables[table_id]

    def start_bundle(self) -> None:
        self._pending = []

    @no_annotations
    def process(
        self,
        event: ValidEvent,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        window: BoundedWindow = beam.DoFn.WindowParam,
    ) -> Iterator[WindowedValue | TaggedOutput]:
        self._pending.append(_Pending(event, timestamp, window))
        if len(self._pending) >= self._target.batch_rows:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue | TaggedOutput]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue | TaggedOutput]:
        pending, self._pending = self._pending, []
        by_table: dict[str, list[_Pending]] = defaultdict(list)
        for item in pending:
            by_table[self._target.table_id(self._row(item.element).table.group)].append(item)
        for table_id, items in by_table.items():
            yield from self._write(table_id, items)

    def _write(
        self, table_id: str, items: list[_Pending]
    ) -> Iterator[WindowedValue | TaggedOutput]:
        now_micros = time.time_ns() // 1000 if self._record_ingest_time else None
        entries = [mutation_entry(self._row(item.element), now_micros) for item in items]
        failures: dict[int, BaseException | None] = {}
        started = time.monotonic()
        try:
            self._table(table_id).bulk_mutate_rows(
                entries,
                operation_timeout=self._target.timeout.total_seconds(),
                attempt_timeout=min(20.0, self._target.timeout.total_seconds()),
                retryable_errors=RETRYABLE_ERRORS,
            )
        except MutationsExceptionGroup as group:
            for exc in group.exceptions:
                index = getattr(exc, "index", None)
                if index is None:
                    raise TransientWriteError(
                        f"unattributable MutateRows failure: {exc}"
                    ) from group
                failures[index] = exc.__cause__
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            self._retryable.inc(len(entries))
            raise TransientWriteError(f"MutateRows to {table_id} failed: {exc}") from exc
        self._batches.inc()
        self._latency.update(int((time.monotonic() - started) * 1000))
        transient = {i: c for i, c in failures.items() if not is_permanent(c)}
        if transient:
            self._retryable.inc(len(transient))
            first = next(iter(transient.values()))
            raise TransientWriteError(
                f"{len(transient)} of {len(entries)} rows to {table_id} failed with retryable "
                f"errors within {self._target.timeout.total_seconds():.0f}s (first: {first!r}); "
                "the bundle will be retried"
            )
        yield from self._outputs(table_id, items, failures)

    def _outputs(
        self, table_id: str, items: Iterable[_Pending], failures: dict[int, BaseException | None]
    ) -> Iterator[WindowedValue | TaggedOutput]:
        for index, item in enumerate(items):
            if index in failures:
                self._rejected.inc()
                letter = self._rejected_letter(item.element, failures[index])
                yield TaggedOutput(REJECTED, WindowedValue(letter, item.timestamp, [item.window]))
            else:
                self._written.inc()
                written = self._written_output(item.element, table_id)
                if written is not None:
                    yield WindowedValue(written, item.timestamp, [item.window])

    # What is written and what comes out; WriteRollupsFn overrides these three.

    def _row(self, element: ValidEvent) -> Row:
        return element.event

    def _written_output(self, element: ValidEvent, table_id: str) -> Written | None:
        return Written(
            table_id=table_id,
            row_key=element.event.row_key(),
            timestamp_micros=element.event.timestamp_micros(),
            raw=element.raw,
        )

    def _rejected_letter(self, element: ValidEvent, cause: BaseException | None) -> DeadLetter:
        return DeadLetter(
            raw=element.raw,
            kind=ErrorKind.WRITE_REJECTED,
            error=f"Bigtable rejected row {element.event.row_key()!r}: {cause}",
            stage=Stage.WRITE,
            schema=element.event.schema_name,
        )


class WriteRollupsFn(WriteRowsFn):
    """Writes RollupRows; nothing to acknowledge, so only rejections come out.

    A rejected rollup becomes a letter carrying the aggregate as JSON: no raw message
    stands behind it.
    """

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__(target)
        self._record_ingest_time = False
        self._written = metrics.counter("rollup_rows_written")

    def _row(self, element: RollupRow) -> Row:  # type: ignore[override]
        return element

    def _written_output(self, element: RollupRow, table_id: str) -> None:  # type: ignore[override]
        return None

    def _rejected_letter(  # type: ignore[override]
        self, element: RollupRow, cause: BaseException | None
    ) -> DeadLetter:
        body = {"row_key": element.row_key(), "values": element.values}
        return DeadLetter(
            raw=RawMessage(data=json.dumps(body).encode(), attributes={"rollup": element.kind}),
            kind=ErrorKind.WRITE_REJECTED,
            error=f"Bigtable rejected rollup row {element.row_key()!r}: {cause}",
            stage=Stage.ROLLUP,
            schema=f"rollup.{element.kind}",
        )


class WriteRows(beam.PTransform):
    """Write events as rows; outputs `written` (main) and `rejected` (DeadLetter)."""

    def __init__(self, target: BigtableTarget) -> None:
        super().__init__()
        self._target = target

    @no_annotations
    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Mutate" >> beam.ParDo(WriteRowsFn(self._target)).with_outputs(
            REJECTED, main="written"
        )
