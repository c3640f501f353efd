"""A Beam-free batch writer for one Bigtable table: add rows, flush them in bounded chunks.

Each failed entry is handled by what its status means (stream/DESIGN.md, "Every Bigtable
status"): transient ones are retried in place, only the failed entries, with full-jitter
backoff up to the retry budget; permanent ones come back as outcomes for a dead letter; a
refusal of the request itself raises RefusedWriteError.
"""

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import exponential_sleep_generator
from google.cloud.bigtable.data import MutationsExceptionGroup, Table
from google.cloud.bigtable.data.exceptions import RetryExceptionGroup

from stream.pipeline.config import DEFAULT_WRITE_RETRY
from stream.pipeline.io.entries import INGESTED_AT, Row, mutation_entry
from stream.pipeline.refused import RefusedError

T = TypeVar("T")
_LOG = logging.getLogger(__name__)

# Statuses of a MutateRows entry that no retry can fix: the row is dead-lettered. Every
# other status is transient (back off in place), except these two, which blame the caller.
# A permanent status of the whole call (a missing table) is a refusal too: no row is to blame.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    gexc.InvalidArgument,
    gexc.NotFound,
    gexc.FailedPrecondition,
    gexc.OutOfRange,
    gexc.AlreadyExists,
    gexc.MethodNotImplemented,
    gexc.DataLoss,
)
REFUSED_ERRORS: tuple[type[Exception], ...] = (gexc.PermissionDenied, gexc.Unauthenticated)

# Backoff between attempts, full jitter (api-core's generator: uniform(0, cap), the cap
# doubling from its first value to MAXIMUM while attempts write nothing). RESOURCE_EXHAUSTED
# starts higher than other transient errors: Bigtable asks the client to slow down.
BACKOFF_INITIAL_SECONDS = 0.1
OVERLOAD_BACKOFF_INITIAL_SECONDS = 0.25
BACKOFF_MAXIMUM_SECONDS = 10.0
BACKOFF_MULTIPLIER = 2.0
WARN_AFTER_SECONDS = 30.0  # rows still failing this long are logged, then every 30 s
# A flush writes up to this many chunks back to back and backs off once for all of them:
# under partial overload, the sleeps per row halve compared to one backoff per chunk.
CHUNKS_PER_FLUSH = 4


class TransientWriteError(RuntimeError):
    """Rows still failed for a retryable reason when the retry budget ran out."""

    def __init__(self, message: str, rows: int) -> None:
        super().__init__(message)
        self.rows = rows


class RefusedWriteError(RefusedError):
    """Bigtable refused the request itself (credentials, permissions, a missing table)."""


def is_permanent(cause: BaseException | None) -> bool:
    """Whether a per-row failure can never succeed on retry (the row is dead-lettered)."""
    return isinstance(cause, PERMANENT_ERRORS)


def is_refused(cause: BaseException | None) -> bool:
    """Whether a failure blames the caller or the whole request, not a row.

    PERMISSION_DENIED and UNAUTHENTICATED always; a permanent status only when the call as
    a whole failed with it (the client then reports the call's error for every entry,
    with the gRPC call as its `response`; an entry's own status has none).
    """
    if isinstance(cause, REFUSED_ERRORS):
        return True
    return _whole_call(cause) and is_permanent(cause)


def _whole_call(cause: BaseException | None) -> bool:
    """Whether the error is the call's own status (it carries the gRPC call as `response`)."""
    return isinstance(cause, gexc.GoogleAPICallError) and cause.response is not None


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


def _cause(exc: BaseException) -> BaseException | None:
    """The status behind one failed entry (the last one, if the client retried it)."""
    cause = exc.__cause__
    if isinstance(cause, RetryExceptionGroup) and cause.exceptions:
        last: BaseException = cause.exceptions[-1]
        return last
    return cause


def _no_throttle_report(seconds: float) -> None:
    return None


class BatchWriter(Generic[T]):
    """Rows for one table, written `chunk_rows` at a time, transient failures retried in place.

    Args:
        table: the data client's table.
        chunk_rows: rows per MutateRows request.
        timeout: the deadline of one MutateRows attempt.
        record_ingest_time: also write `ingested_at` (the attempt's wall clock).
        retry: how long a flush may back off before TransientWriteError (0: no retry).
        on_throttled: called with the seconds of every backoff sleep, as it happens.
        raw_entries: build entries as raw protobuf (stream/pipeline/io/client_patches.py).
        clock, sleep: monotonic seconds and how to wait (tests pass fakes).
    """

    def __init__(
        self,
        table: Table,
        chunk_rows: int,
        timeout: timedelta,
        record_ingest_time: bool = False,
        retry: timedelta = DEFAULT_WRITE_RETRY,
        on_throttled: Callable[[float], None] = _no_throttle_report,
        raw_entries: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._chunk = chunk_rows
        self._timeout = timeout.total_seconds()
        self._record_ingest_time = record_ingest_time
        self._retry = retry.total_seconds()
        self._on_throttled = on_throttled
        self._raw_entries = raw_entries
        self._clock = clock
        self._sleep = sleep
        self._pending: list[tuple[Row, T]] = []
        self.batches = 0  # MutateRows calls answered (entry by entry)
        self.batch_millis: list[int] = []  # how long each took, since the last flush
        self.retried_rows = 0  # entries sent again after a transient failure
        self.throttled_seconds = 0.0  # time slept backing off

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether a flush's worth of rows is buffered: flush before adding more."""
        return len(self._pending) >= self._chunk * CHUNKS_PER_FLUSH

    def add(self, row: Row, item: T) -> None:
        """Buffer a row; `item` is what the outcome reports it as."""
        self._pending.append((row, item))

    def flush(self) -> Iterator[Outcome[T]]:
        """Write everything buffered until each row is written or refused for good.

        Each round sends the rows still to write, a chunk per MutateRows, then backs off
        once if some failed for a transient reason; yields every item's outcome at the end.
        The loop is ours, not api-core's `retry_target`: the backoff starts over whenever a
        round wrote some rows (Bigtable is taking work: 5% refused entries must not escalate
        to minutes of sleep), its first step depends on the error, and every sleep is
        reported as throttled time.
        """
        rows, self._pending = self._pending, []
        self.batch_millis = []
        errors: dict[int, BaseException | None] = {}
        remaining = list(range(len(rows)))
        started = self._clock()
        deadline = started + self._retry
        delays: Iterator[float] | None = None
        warned_at = started
        while remaining:
            failed: dict[int, BaseException | None] = {}
            for start in range(0, len(remaining), self._chunk):
                indexes = remaining[start : start + self._chunk]
                failed.update(self._attempt(rows, indexes, errors))
            if not failed:
                break
            if delays is None or len(failed) < len(remaining):  # first, or progress: anew
                overload = any(isinstance(c, gexc.ResourceExhausted) for c in failed.values())
                delays = self._delays(overload)
            remaining = sorted(failed)
            delay = next(delays)
            now = self._clock()
            if now + delay > deadline:
                first = failed[remaining[0]]
                raise TransientWriteError(
                    f"{len(remaining)} of {len(rows)} rows to {self._table.table_id} still "
                    f"failed after {now - started:.0f}s of retries (--write_retry_seconds="
                    f"{self._retry:.0f}; last error: {first!r}); the batch must be tried again",
                    len(remaining),
                )
            if now - warned_at >= WARN_AFTER_SECONDS:
                warned_at = now
                _LOG.warning(
                    "Bigtable: %d of %d rows to %s still failing after %.0fs (%r); backing "
                    "off in place, up to %.0fs in all",
                    len(remaining),
                    len(rows),
                    self._table.table_id,
                    now - started,
                    failed[remaining[0]],
                    self._retry,
                )
            self._sleep(delay)
            self.throttled_seconds += delay
            self.retried_rows += len(remaining)
            self._on_throttled(delay)
        for index, (row, item) in enumerate(rows):
            yield Outcome(item, row, errors.get(index))

    def _delays(self, overload: bool) -> Iterator[float]:
        initial = OVERLOAD_BACKOFF_INITIAL_SECONDS if overload else BACKOFF_INITIAL_SECONDS
        delays: Iterator[float] = exponential_sleep_generator(
            initial, BACKOFF_MAXIMUM_SECONDS, BACKOFF_MULTIPLIER
        )
        return delays

    def _attempt(
        self,
        rows: list[tuple[Row, T]],
        indexes: list[int],
        permanent: dict[int, BaseException | None],
    ) -> dict[int, BaseException | None]:
        """One MutateRows of the buffered rows at `indexes`, every entry built afresh.

        Records rows refused for good in `permanent`; returns the transient failures by
        index. One attempt per call (no retries inside the client): every retry is the
        flush's, so every wait is counted.
        """
        now = time.time_ns() // 1000 if self._record_ingest_time else None
        entries = [mutation_entry(rows[i][0], now, self._raw_entries) for i in indexes]
        causes: dict[int, BaseException | None] = {}
        started = self._clock()
        try:
            self._table.bulk_mutate_rows(
                entries,
                operation_timeout=self._timeout,
                attempt_timeout=self._timeout,
                retryable_errors=(),
            )
        except MutationsExceptionGroup as group:
            for exc in group.exceptions:
                index = getattr(exc, "index", None)
                if index is None:  # not attributable to one entry: all of them again
                    causes = dict.fromkeys(range(len(entries)), exc)
                    break
                causes[index] = _cause(exc)
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            causes = dict.fromkeys(range(len(entries)), exc)
        refused = next((c for c in causes.values() if is_refused(c)), None)
        if refused is not None:
            raise RefusedWriteError(
                f"Bigtable refused the write to {self._table.table_id}: {refused!r}",
                "No retry can fix this and no row is to blame, so nothing was dead-lettered: "
                "check the credentials, the role on the instance (roles/bigtable.user) and the "
                "table. Unacknowledged messages stay in the subscription.",
            ) from refused
        if not any(_whole_call(c) for c in causes.values()):
            self.batches += 1
            self.batch_millis.append(int((self._clock() - started) * 1000))
        failed: dict[int, BaseException | None] = {}
        for position, cause in causes.items():
            if is_permanent(cause):
                permanent[indexes[position]] = cause
            else:
                failed[indexes[position]] = cause
        return failed


__all__ = [
    "INGESTED_AT",
    "PERMANENT_ERRORS",
    "REFUSED_ERRORS",
    "BatchWriter",
    "Outcome",
    "RefusedWriteError",
    "Row",
    "TransientWriteError",
    "is_permanent",
    "is_refused",
    "mutation_entry",
]
