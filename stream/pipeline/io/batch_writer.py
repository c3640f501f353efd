"""A Beam-free batch writer for one Bigtable table: add rows, flush them in bounded chunks.

Lifecycle like a quix-streams sink: the caller creates the data client (once per process),
`add`s rows with the item each stands for, and `flush`es. Every MutateRows entry is checked:
the flush reports, per item, whether its row was written or refused for good (with the
cause); rows that failed for a transient reason after the client's own retries raise
TransientWriteError, so the caller (a DoFn) fails its bundle and the runner retries it.
Mutations are built anew for every attempt from the immutable row (never a mutation object
a previous attempt consumed).
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import MutationsExceptionGroup, RowMutationEntry, SetCell, Table

from schemas.base import Cell, TableSpec

T = TypeVar("T")
INGESTED_AT = b"ingested_at"

# Errors that no retry can fix for this row: the row goes to the dead letter.
PERMANENT_ERRORS = (
    gexc.InvalidArgument,
    gexc.NotFound,
    gexc.FailedPrecondition,
    gexc.OutOfRange,
)
# Retried by the client itself, per entry, within the timeout. Safe because every mutation
# carries an explicit timestamp (idempotent); the classic client retries the same set. The
# data client's default retries only DEADLINE_EXCEEDED and UNAVAILABLE.
RETRYABLE_ERRORS = (
    gexc.DeadlineExceeded,
    gexc.ServiceUnavailable,
    gexc.Aborted,
    gexc.InternalServerError,
)
MAX_ATTEMPT_SECONDS = 20.0


class Row(Protocol):
    """What can be written: a validated event (MappedEvent) or an aggregate (RollupRow)."""

    @property
    def table(self) -> TableSpec: ...

    def row_key(self) -> str: ...

    def cells(self) -> tuple[Cell, ...]: ...

    def timestamp_micros(self) -> int: ...


class TransientWriteError(RuntimeError):
    """Rows could not be written for a retryable reason; the batch must be tried again."""

    def __init__(self, message: str, rows: int) -> None:
        super().__init__(message)
        self.rows = rows


def is_permanent(cause: BaseException | None) -> bool:
    """Whether a per-row failure can never succeed on retry."""
    return isinstance(cause, PERMANENT_ERRORS)


def mutation_entry(row: Row, ingest_micros: int | None = None) -> RowMutationEntry:
    """A fresh MutateRows entry for one row: every cell at the row's timestamp."""
    ts = row.timestamp_micros()
    cells = row.cells()
    mutations = [SetCell(c.family, c.qualifier, c.value, timestamp_micros=ts) for c in cells]
    if ingest_micros is not None:
        # Same cell timestamp as the event: a rewrite replaces it instead of adding a version.
        mutations.append(
            SetCell(cells[0].family, INGESTED_AT, str(ingest_micros // 1000).encode(), ts)
        )
    return RowMutationEntry(row.row_key().encode(), mutations)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """One added item after a flush: written (`error` None) or refused for good."""

    item: T
    row: Row
    error: BaseException | None = None

    @property
    def written(self) -> bool:
        """Whether Bigtable stored the row."""
        return self.error is None


class BatchWriter(Generic[T]):
    """Rows for one table, written `chunk_rows` at a time."""

    def __init__(
        self,
        table: Table,
        chunk_rows: int,
        timeout: timedelta,
        record_ingest_time: bool = False,
    ) -> None:
        self._table = table
        self._chunk = chunk_rows
        self._timeout = timeout.total_seconds()
        self._record_ingest_time = record_ingest_time
        self._pending: list[tuple[Row, T]] = []
        self.batches = 0  # MutateRows calls that completed
        self.batch_millis: list[int] = []  # how long each took, since the last flush

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether a chunk is ready: flush before adding more."""
        return len(self._pending) >= self._chunk

    def add(self, row: Row, item: T) -> None:
        """Buffer a row; `item` is what the outcome reports it as."""
        self._pending.append((row, item))

    def flush(self) -> Iterator[Outcome[T]]:
        """Write everything buffered, a chunk per MutateRows; yields each item's outcome."""
        pending, self._pending = self._pending, []
        self.batch_millis = []
        for start in range(0, len(pending), self._chunk):
            yield from self._write(pending[start : start + self._chunk])

    def _write(self, chunk: list[tuple[Row, T]]) -> Iterator[Outcome[T]]:
        now = time.time_ns() // 1000 if self._record_ingest_time else None
        entries = [mutation_entry(row, now) for row, _ in chunk]
        failures: dict[int, BaseException | None] = {}
        started = time.monotonic()
        try:
            self._table.bulk_mutate_rows(
                entries,
                operation_timeout=self._timeout,
                attempt_timeout=min(MAX_ATTEMPT_SECONDS, self._timeout),
                retryable_errors=RETRYABLE_ERRORS,
            )
        except MutationsExceptionGroup as group:
            for exc in group.exceptions:
                index = getattr(exc, "index", None)
                if index is None:
                    raise TransientWriteError(
                        f"unattributable MutateRows failure: {exc}", len(entries)
                    ) from group
                failures[index] = exc.__cause__
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise TransientWriteError(
                f"MutateRows to {self._table.table_id} failed: {exc}", len(entries)
            ) from exc
        self.batches += 1
        self.batch_millis.append(int((time.monotonic() - started) * 1000))
        transient = {i: c for i, c in failures.items() if not is_permanent(c)}
        if transient:
            first = next(iter(transient.values()))
            raise TransientWriteError(
                f"{len(transient)} of {len(entries)} rows to {self._table.table_id} failed with "
                f"retryable errors within {self._timeout:.0f}s (first: {first!r}); the batch "
                "must be tried again",
                len(transient),
            )
        for index, (row, item) in enumerate(chunk):
            yield Outcome(item, row, failures.get(index))
