"""The batch writer against the real Bigtable emulator behind the fault proxy, status by status.

Every gRPC code Bigtable can answer a MutateRows entry or call with is injected; what the
writer must do with each (back off in place, dead-letter the row, or refuse the batch) is
written here from the codes' meanings, independently of the writer's own table. Results are
read back from the emulator directly, not through the proxy.
"""

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import BigtableDataClient

from loadgen.readback import read_table
from schemas.consent import ConsentV1
from stream.names import BIGTABLE_ENV
from stream.pipeline.io.batch_writer import (
    BatchWriter,
    Outcome,
    RefusedWriteError,
    TransientWriteError,
)
from tests.faults.proxy import FaultProxy, draw
from tests.helpers.builders import consent_body, encoded
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.faults, pytest.mark.emulator]

TRANSIENT = [
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
]
PERMANENT = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
]
REFUSED = [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED]
ROWS = 40
RATIO = 0.3


# The writer's backoff (full jitter): a sleep is uniform(0, cap); the cap starts at 0.25 s
# for RESOURCE_EXHAUSTED (Bigtable asks to slow down) and 0.1 s for the other transient
# codes, doubles after each attempt that wrote nothing, and starts over after one that wrote.
def first_cap(code: grpc.StatusCode) -> float:
    return 0.25 if code == grpc.StatusCode.RESOURCE_EXHAUSTED else 0.1


def _name(code: grpc.StatusCode) -> str:
    return str(code.name)


@pytest.fixture
def client(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[BigtableDataClient]:
    """A data client through the proxy (the test's own reads go to the emulator directly)."""
    with monkeypatch.context() as patch:
        patch.setenv(BIGTABLE_ENV, proxy.address)
        data_client = BigtableDataClient(project=PROJECT)
    try:
        yield data_client
    finally:
        data_client.close()


def _events(n: int) -> list[ConsentV1]:
    now = datetime.now(UTC)
    bodies = [consent_body(domain="errors.example.com", when=now) for _ in range(n)]
    return [ConsentV1.model_validate_json(encoded(body)) for body in bodies]


def _writer(
    client: BigtableDataClient,
    resources: TestResources,
    retry: float = 60.0,
    throttled: list[float] | None = None,
) -> BatchWriter[int]:
    return BatchWriter[int](
        client.get_table(resources.instance, resources.table("consent")),
        chunk_rows=ROWS,
        timeout=timedelta(seconds=10),
        retry=timedelta(seconds=retry),
        on_throttled=(throttled if throttled is not None else []).append,
    )


def _write(writer: BatchWriter[int], events: list[ConsentV1]) -> list[Outcome[int]]:
    for index, event in enumerate(events):
        writer.add(event, index)
    return list(writer.flush())


def _stored_keys(resources: TestResources) -> set[str]:
    return set(read_table(PROJECT, resources.instance, resources.table("consent")))


def _rounds(seed: int, ratio: float, n: int) -> list[list[int]]:
    """The rows each attempt carries when only failed entries are sent again.

    The proxy fails entry i of its k-th call when draw(seed, "entry", k, i) < ratio; the
    writer resends the failed ones in their original order.
    """
    rounds, remaining, call = [], list(range(n)), 0
    while remaining:
        rounds.append(remaining)
        remaining = [r for i, r in enumerate(remaining) if draw(seed, "entry", call, i) < ratio]
        call += 1
    return rounds


def _caps(rounds: list[list[int]], first: float) -> list[float]:
    """The cap of each sleep between the attempts of `rounds`."""
    caps, streak = [], 0
    for attempt, failed in itertools.pairwise(rounds):
        streak = 0 if len(failed) < len(attempt) else streak + 1
        caps.append(first * 2 ** max(0, streak - 1))
    return caps


def _within(sleeps: list[float], caps: list[float]) -> bool:
    return len(sleeps) == len(caps) and all(0 <= s <= c for s, c in zip(sleeps, caps, strict=True))


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_transient_entries_are_retried_in_place_until_written(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient, code: grpc.StatusCode
) -> None:
    events = _events(ROWS)
    proxy.fail_entries(RATIO, codes=(code,), seed=11)
    throttled: list[float] = []
    writer = _writer(client, resources, throttled=throttled)
    outcomes = _write(writer, events)

    assert [o.item for o in outcomes] == list(range(ROWS))
    assert all(o.written for o in outcomes)
    assert _stored_keys(resources) == {e.row_key() for e in events}
    # Only the failed entries went again, each time, each with all its cells.
    keys = [e.row_key().encode() for e in events]
    rounds = _rounds(11, RATIO, ROWS)
    assert len(rounds) >= 3
    stats = proxy.stats()
    assert [[key for key, _ in request] for request in stats.requests] == [
        [keys[i] for i in attempt] for attempt in rounds
    ]
    assert {n for request in stats.requests for _, n in request} == {2}
    assert stats.empty_mutation_entries == 0
    # Every backoff was reported as it happened, each within its cap.
    assert _within(throttled, _caps(rounds, first_cap(code)))
    assert sum(throttled) == pytest.approx(writer.throttled_seconds)
    assert writer.retried_rows == sum(len(attempt) for attempt in rounds[1:])


@pytest.mark.parametrize("code", PERMANENT, ids=_name)
def test_permanent_entries_are_refused_for_good_and_the_rest_written(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient, code: grpc.StatusCode
) -> None:
    events = _events(ROWS)
    proxy.fail_entries(RATIO, codes=(code,), seed=12)
    doomed = {i for i in range(ROWS) if draw(12, "entry", 0, i) < RATIO}
    assert 0 < len(doomed) < ROWS
    throttled: list[float] = []
    outcomes = _write(_writer(client, resources, throttled=throttled), events)

    wanted = type(gexc.from_grpc_status(code, ""))
    assert {o.item for o in outcomes if not o.written} == doomed
    assert all(type(o.error) is wanted for o in outcomes if not o.written)
    assert _stored_keys(resources) == {e.row_key() for i, e in enumerate(events) if i not in doomed}
    assert proxy.stats().calls == 1  # no retry
    assert throttled == []


@pytest.mark.parametrize("code", REFUSED, ids=_name)
def test_refused_entries_fail_the_batch_at_once(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient, code: grpc.StatusCode
) -> None:
    events = _events(ROWS)
    proxy.fail_entries(RATIO, codes=(code,), seed=13)
    writer = _writer(client, resources)
    with pytest.raises(RefusedWriteError, match="credentials") as raised:
        _write(writer, events)
    assert type(raised.value.__cause__) is type(gexc.from_grpc_status(code, ""))
    assert proxy.stats().calls == 1  # no retry, and no outcome: nothing is dead-lettered
    assert writer.throttled_seconds == 0


@pytest.mark.parametrize("code", TRANSIENT, ids=_name)
def test_transient_whole_calls_are_retried_until_one_gets_through(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient, code: grpc.StatusCode
) -> None:
    events = _events(ROWS)
    proxy.fail_calls(0.6, code=code, seed=11)
    failing = next(k for k in range(100) if draw(11, "call", k) >= 0.6)
    assert failing >= 2  # the seed fails the first calls: the retry path runs
    throttled: list[float] = []
    outcomes = _write(_writer(client, resources, throttled=throttled), events)

    assert all(o.written for o in outcomes)
    assert _stored_keys(resources) == {e.row_key() for e in events}
    stats = proxy.stats()
    assert (stats.calls, stats.calls_failed) == (failing + 1, failing)
    assert all(len(request) == ROWS for request in stats.requests)  # the whole batch each time
    assert _within(throttled, [first_cap(code) * 2**k for k in range(failing)])  # doubling


@pytest.mark.parametrize("code", PERMANENT + REFUSED, ids=_name)
def test_a_whole_call_refused_for_good_fails_the_batch_and_blames_no_row(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient, code: grpc.StatusCode
) -> None:
    proxy.fail_calls(1.0, code=code)
    writer = _writer(client, resources)
    with pytest.raises(RefusedWriteError, match="no row is to blame"):
        _write(writer, _events(ROWS))
    assert proxy.stats().calls == 1
    assert _stored_keys(resources) == set()


def test_a_missing_table_is_refused_not_dead_lettered(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient
) -> None:
    # The emulator's own NOT_FOUND for the whole call, forwarded by the proxy unchanged.
    writer = BatchWriter[int](
        client.get_table(resources.instance, "no-such-table"), ROWS, timedelta(seconds=10)
    )
    with pytest.raises(RefusedWriteError) as raised:
        _write(writer, _events(3))
    assert isinstance(raised.value.__cause__, gexc.NotFound)


def test_an_outage_longer_than_the_retry_budget_raises_and_writes_nothing(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient
) -> None:
    proxy.outage(120)
    throttled: list[float] = []
    writer = _writer(client, resources, retry=3.0, throttled=throttled)
    with pytest.raises(TransientWriteError, match="--write_retry_seconds=3") as raised:
        _write(writer, _events(ROWS))
    assert raised.value.rows == ROWS
    stats = proxy.stats()
    assert stats.calls == stats.outage_calls == len(throttled) + 1 >= 2
    assert sum(throttled) <= 3.0  # no sleep past the budget
    assert _stored_keys(resources) == set()


def test_no_retry_budget_fails_at_the_first_transient_error(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient
) -> None:
    proxy.fail_entries(1.0, codes=(grpc.StatusCode.RESOURCE_EXHAUSTED,))
    writer = _writer(client, resources, retry=0.0)
    with pytest.raises(TransientWriteError):
        _write(writer, _events(5))
    assert proxy.stats().calls == 1
    assert writer.throttled_seconds == 0


def test_half_the_entries_refused_for_overload_still_converges(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient
) -> None:
    """Each attempt that writes something starts the backoff over: 50% never escalates."""
    events = _events(200)
    proxy.fail_entries(0.5, codes=(grpc.StatusCode.RESOURCE_EXHAUSTED,), seed=15)
    throttled: list[float] = []
    writer = BatchWriter[int](
        client.get_table(resources.instance, resources.table("consent")),
        chunk_rows=200,
        timeout=timedelta(seconds=10),
        retry=timedelta(seconds=60),
        on_throttled=throttled.append,
    )
    outcomes = _write(writer, events)
    assert all(o.written for o in outcomes)
    rounds = _rounds(15, 0.5, 200)
    assert proxy.stats().calls == len(rounds) >= 6
    caps = _caps(rounds, first_cap(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert _within(throttled, caps)
    assert caps.count(0.25) >= len(caps) - 2  # it hardly ever escalated
    assert _stored_keys(resources) == {e.row_key() for e in events}


def test_a_flush_backs_off_once_per_round_for_all_its_chunks(
    resources: TestResources, proxy: FaultProxy, client: BigtableDataClient
) -> None:
    """Three chunks' failures are retried together after one sleep, in as few calls as fit."""
    events = _events(3 * ROWS)
    proxy.fail_entries(RATIO, codes=(grpc.StatusCode.UNAVAILABLE,), seed=16)
    throttled: list[float] = []
    writer = _writer(client, resources, throttled=throttled)
    outcomes = _write(writer, events)
    assert all(o.written for o in outcomes)

    # Independently: each round splits what is left into calls of ROWS entries; the proxy
    # numbers its calls across rounds.
    calls: list[list[int]] = []
    rounds = 0
    remaining = list(range(3 * ROWS))
    while remaining:
        rounds += 1
        failed = []
        for start in range(0, len(remaining), ROWS):
            call = remaining[start : start + ROWS]
            failed += [r for i, r in enumerate(call) if draw(16, "entry", len(calls), i) < RATIO]
            calls.append(call)
        remaining = failed
    keys = [e.row_key().encode() for e in events]
    requests = proxy.stats().requests
    assert [[key for key, _ in request] for request in requests] == [
        [keys[i] for i in call] for call in calls
    ]
    assert len(calls) > rounds >= 3
    assert len(throttled) == rounds - 1  # one sleep per round, not per call
    assert _stored_keys(resources) == {e.row_key() for e in events}
