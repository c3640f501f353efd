"""BatchWriter alone: a fake data-client table that answers each MutateRows as scripted.

The fake raises what the Bigtable data client raises (a MutationsExceptionGroup of
FailedMutationEntryErrors for entry statuses, the call's own error for every entry when the
call fails); the clock is fake and advanced by the writer's sleeps. Expectations come from
the statuses' meanings and the documented backoff (full jitter, cap from 0.1 s or 0.25 s for
RESOURCE_EXHAUSTED, doubling to 10 s while nothing is written, anew after progress).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import MutationsExceptionGroup
from google.cloud.bigtable.data.exceptions import FailedMutationEntryError

from schemas.consent import ConsentV1
from stream.pipeline.io.batch_writer import BatchWriter, RefusedWriteError, TransientWriteError
from tests.helpers.builders import consent_body, encoded

Call = list[Any]  # the entries of one MutateRows
# What one call answers: {position in the call: the entry's error}, or an error of the call.
Answer = dict[int, Exception] | Exception
WHOLE_CALL = object()  # what a failed gRPC call carries as `response` (an entry's error: None)


def entry_error(cls: type[gexc.GoogleAPICallError]) -> Exception:
    error: Exception = cls(f"entry failed with {cls.__name__}")
    return error


def call_error(cls: type[gexc.GoogleAPICallError]) -> Exception:
    error: Exception = cls(f"call failed with {cls.__name__}", response=WHOLE_CALL)
    return error


@dataclass
class FakeTable:
    """`bulk_mutate_rows` as the data client does it, answering from a script of answers."""

    answers: list[Any]  # of Answer
    table_id: str = "scale-traffic"
    calls: list[Call] = field(default_factory=list)
    timeouts: list[tuple[float, float, tuple[Any, ...]]] = field(default_factory=list)

    def bulk_mutate_rows(
        self,
        entries: Call,
        operation_timeout: float,
        attempt_timeout: float,
        retryable_errors: tuple[Any, ...],
    ) -> None:
        self.calls.append(list(entries))
        self.timeouts.append((operation_timeout, attempt_timeout, retryable_errors))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            failed = dict.fromkeys(range(len(entries)), answer)
        else:
            failed = answer
        if failed:
            errors = [FailedMutationEntryError(i, entries[i], exc) for i, exc in failed.items()]
            raise MutationsExceptionGroup(errors, len(entries))

    def keys(self, call: int) -> list[bytes]:
        return [entry.row_key for entry in self.calls[call]]


class FakeClock:
    """Monotonic seconds that move only when the writer sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def events(n: int) -> list[ConsentV1]:
    when = datetime(2026, 11, 24, 6, 40, 53, 123000, tzinfo=UTC)
    bodies = [consent_body(f"0b0d8f5e-6a4f-4e8e-9a57-{i:012d}", when=when) for i in range(n)]
    return [ConsentV1.model_validate_json(encoded(body)) for body in bodies]


def writer(
    table: FakeTable,
    clock: FakeClock,
    chunk: int = 10,
    retry: timedelta = timedelta(minutes=15),
    on_throttled: Callable[[float], None] = lambda seconds: None,
) -> BatchWriter[int]:
    return BatchWriter[int](
        table,
        chunk,
        timedelta(seconds=7),
        retry=retry,
        on_throttled=on_throttled,
        clock=clock,
        sleep=clock.sleep,
    )


def write(batch: BatchWriter[int], rows: list[ConsentV1]) -> dict[int, Exception | None]:
    for index, row in enumerate(rows):
        batch.add(row, index)
    return {o.item: o.error for o in batch.flush()}  # type: ignore[misc]


@pytest.fixture
def highest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter draws uniform(0, cap): pinned to the cap, every sleep is the cap itself."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


def test_rows_are_sent_in_chunks_of_one_attempt_each_and_all_are_written() -> None:
    table, clock = FakeTable([]), FakeClock()
    batch = writer(table, clock, chunk=2)
    outcomes = write(batch, events(5))
    assert outcomes == dict.fromkeys(range(5))
    assert [len(call) for call in table.calls] == [2, 2, 1]
    # One attempt per call (the writer retries, not the client), the attempt's deadline.
    assert set(table.timeouts) == {(7.0, 7.0, ())}
    assert batch.batches == 3 and clock.sleeps == [] and len(batch) == 0


def test_only_the_failed_entries_are_sent_again_after_a_backoff(highest_jitter: None) -> None:
    table = FakeTable([{1: entry_error(gexc.ServiceUnavailable), 3: entry_error(gexc.Aborted)}])
    clock, throttled = FakeClock(), list[float]()
    batch = writer(table, clock, on_throttled=throttled.append)
    rows = events(5)
    assert write(batch, rows) == dict.fromkeys(range(5))
    assert table.keys(1) == [rows[1].row_key().encode(), rows[3].row_key().encode()]
    assert table.calls[1][0] is not table.calls[0][1]  # built afresh, never reused
    assert clock.sleeps == [0.1] and throttled == [0.1]
    assert batch.retried_rows == 2 and batch.throttled_seconds == pytest.approx(0.1)


def test_a_permanent_entry_status_is_an_outcome_not_a_retry() -> None:
    table = FakeTable([{2: entry_error(gexc.InvalidArgument), 0: entry_error(gexc.NotFound)}])
    clock = FakeClock()
    outcomes = write(writer(table, clock), events(4))
    assert isinstance(outcomes[2], gexc.InvalidArgument)
    assert isinstance(outcomes[0], gexc.NotFound)  # an entry's NOT_FOUND: e.g. no such family
    assert outcomes[1] is None and outcomes[3] is None
    assert len(table.calls) == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    "answer",
    [
        {0: entry_error(gexc.PermissionDenied)},
        {1: entry_error(gexc.Unauthenticated)},
        call_error(gexc.NotFound),  # the whole call: a missing table
        call_error(gexc.InvalidArgument),
    ],
    ids=["entry PERMISSION_DENIED", "entry UNAUTHENTICATED", "call NOT_FOUND", "call INVALID"],
)
def test_a_refusal_raises_at_once_without_backoff(answer: Answer) -> None:
    table, clock = FakeTable([answer]), FakeClock()
    with pytest.raises(RefusedWriteError, match="scale-traffic"):
        write(writer(table, clock), events(3))
    assert len(table.calls) == 1 and clock.sleeps == []


def test_a_failed_call_with_a_transient_status_is_retried_whole(highest_jitter: None) -> None:
    table = FakeTable([call_error(gexc.DeadlineExceeded)])
    clock = FakeClock()
    batch = writer(table, clock)
    assert write(batch, events(3)) == dict.fromkeys(range(3))
    assert [len(call) for call in table.calls] == [3, 3]
    assert batch.batches == 1  # only the answered call counts


def test_the_backoff_doubles_while_nothing_is_written_and_starts_over_after_progress(
    highest_jitter: None,
) -> None:
    overload = entry_error(gexc.ResourceExhausted)
    nothing = {0: overload, 1: overload}
    table = FakeTable([nothing] * 8 + [{1: overload}])
    clock = FakeClock()
    assert write(writer(table, clock), events(2)) == {0: None, 1: None}
    # RESOURCE_EXHAUSTED: from 0.25 s, doubling to the 10 s maximum; then a round wrote row
    # 0, so the next sleep starts over.
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 0.25]


def test_other_transient_codes_start_lower() -> None:
    table = FakeTable([{0: entry_error(gexc.InternalServerError)}] * 3)
    clock = FakeClock()
    write(writer(table, clock), events(1))
    assert len(clock.sleeps) == 3
    for sleep, cap in zip(clock.sleeps, [0.1, 0.2, 0.4], strict=True):
        assert 0.0 <= sleep <= cap  # full jitter: anywhere up to the cap


def test_past_the_retry_budget_the_flush_raises_and_says_how_many_rows(
    highest_jitter: None,
) -> None:
    table = FakeTable([{0: entry_error(gexc.ServiceUnavailable)}] * 100)
    clock = FakeClock()
    batch = writer(table, clock, retry=timedelta(seconds=5))
    with pytest.raises(TransientWriteError, match="1 of 3 rows") as raised:
        write(batch, events(3))
    assert raised.value.rows == 1
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 slept; the next 3.2 would pass the 5 s budget.
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert sum(clock.sleeps) <= 5.0


def test_no_retry_budget_fails_at_the_first_transient_error() -> None:
    table = FakeTable([{0: entry_error(gexc.ServiceUnavailable)}])
    clock = FakeClock()
    with pytest.raises(TransientWriteError):
        write(writer(table, clock, retry=timedelta(0)), events(2))
    assert clock.sleeps == []


def test_full_means_a_flushs_worth_of_rows() -> None:
    batch = writer(FakeTable([]), FakeClock(), chunk=2)
    for index, row in enumerate(events(7)):
        batch.add(row, index)
    assert not batch.full  # 4 chunks of 2 make a flush
    batch.add(events(1)[0], 7)
    assert batch.full
