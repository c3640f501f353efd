"""The fault proxy against a real Bigtable emulator: forwarding, and every injected fault.

Outcomes are read back from the emulator directly (bypassing the proxy), so a test proves what
was really applied, not what the proxy or the client claims.
"""

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from itertools import count
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable import Client
from google.cloud.bigtable.data import (
    BigtableDataClient,
    MutationsExceptionGroup,
    ReadRowsQuery,
    RowMutationEntry,
    SetCell,
    Table,
)
from google.cloud.bigtable.data.exceptions import FailedMutationEntryError, RetryExceptionGroup
from google.cloud.bigtable_v2.types import (
    MutateRowsRequest,
    MutateRowsResponse,
    PingAndWarmRequest,
    PingAndWarmResponse,
)

from stream.local.emulators import Emulator, start_bigtable
from stream.names import BIGTABLE_ENV
from tests.faults.proxy import MUTATE_ROWS, FaultProxy, Shape, draw, method_shapes

pytestmark = pytest.mark.faults

PROJECT = "test-project"
INSTANCE = "faults"
FAMILY = "cf"
QUALIFIER = b"q"
TIMESTAMP = 1_700_000_000_000_000  # explicit cell timestamps make every entry idempotent
PING_AND_WARM = "/google.bigtable.v2.Bigtable/PingAndWarm"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    running = start_bigtable(port=0)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    with FaultProxy(emulator.address) as running:
        yield running


@pytest.fixture
def via_proxy(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> FaultProxy:
    """The proxy with no rules and zeroed stats; clients built now connect through it."""
    proxy.reset()
    proxy.reset_stats()
    monkeypatch.setenv(BIGTABLE_ENV, proxy.address)
    return proxy


@pytest.fixture
def table_id(via_proxy: FaultProxy) -> str:
    """A fresh table with one column family, created through the proxy (admin API)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    Client(project=PROJECT, admin=True).instance(INSTANCE).table(name).create(
        column_families={FAMILY: None}
    )
    via_proxy.reset_stats()
    return name


@pytest.fixture
def table(via_proxy: FaultProxy, table_id: str) -> Iterator[Table]:
    """The data client's handle on the fresh table, through the proxy."""
    with BigtableDataClient(project=PROJECT) as client:
        yield client.get_table(INSTANCE, table_id)


def _key(i: int) -> bytes:
    return f"row-{i:03d}".encode()


def _rows(n: int) -> dict[bytes, bytes]:
    return {_key(i): f"value-{i}".encode() for i in range(n)}


def _entries(rows: Mapping[bytes, bytes]) -> list[RowMutationEntry]:
    return [
        RowMutationEntry(key, [SetCell(FAMILY, QUALIFIER, value, timestamp_micros=TIMESTAMP)])
        for key, value in rows.items()
    ]


def _read_all(table: Table) -> dict[bytes, bytes]:
    return {
        row.row_key: row.cells[0].value for row in table.read_rows(ReadRowsQuery()) if row.cells
    }


def _upstream_rows(
    emulator: Emulator, table_id: str, monkeypatch: pytest.MonkeyPatch
) -> dict[bytes, bytes]:
    """Every row as the emulator holds it, read directly (not through the proxy)."""
    with monkeypatch.context() as patch:
        patch.setenv(BIGTABLE_ENV, emulator.address)
        with BigtableDataClient(project=PROJECT) as client:
            return _read_all(client.get_table(INSTANCE, table_id))


def _failures(group: MutationsExceptionGroup) -> dict[int, list[BaseException]]:
    """Failed entry index -> the error(s) behind it (a retried entry has several)."""
    result: dict[int, list[BaseException]] = {}
    for exc in group.exceptions:
        assert isinstance(exc, FailedMutationEntryError)
        cause = exc.__cause__
        causes = list(cause.exceptions) if isinstance(cause, RetryExceptionGroup) else [cause]
        result[exc.index] = [c for c in causes if c is not None]
    return result


def _table_name(table_id: str) -> str:
    return f"projects/{PROJECT}/instances/{INSTANCE}/tables/{table_id}"


def _set_cell(key: bytes, family: str = FAMILY) -> dict[str, object]:
    cell = {"family_name": family, "column_qualifier": QUALIFIER, "value": b"v"}
    return {"row_key": key, "mutations": [{"set_cell": {**cell, "timestamp_micros": TIMESTAMP}}]}


def _raw_mutate_rows(address: str, request: MutateRowsRequest) -> list[MutateRowsResponse]:
    """MutateRows on a plain channel: lets a test send what the clients refuse to build."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_stream(
            MUTATE_ROWS,
            request_serializer=MutateRowsRequest.serialize,
            response_deserializer=MutateRowsResponse.deserialize,
        )
        return list(call(request, timeout=10))


def _statuses(responses: list[MutateRowsResponse]) -> dict[int, tuple[int, str]]:
    return {e.index: (e.status.code, e.status.message) for r in responses for e in r.entries}


# -- forwarding -----------------------------------------------------------------------------


def test_shapes_cover_every_rpc_of_the_installed_clients() -> None:
    shapes = method_shapes()
    for package in ("google.cloud.bigtable_v2", "google.cloud.bigtable_admin_v2"):
        metadata = json.loads(resources.files(package).joinpath("gapic_metadata.json").read_text())
        for service, spec in metadata["services"].items():
            for rpc in spec["clients"]["grpc"]["rpcs"]:
                assert f"/{metadata['protoPackage']}.{service}/{rpc}" in shapes, rpc
    assert shapes["/google.bigtable.v2.Bigtable/ReadRows"] is Shape.UNARY_STREAM
    assert shapes[MUTATE_ROWS] is Shape.UNARY_STREAM
    assert shapes[PING_AND_WARM] is Shape.UNARY_UNARY
    assert shapes["/google.bigtable.admin.v2.BigtableTableAdmin/CreateTable"] is Shape.UNARY_UNARY
    assert shapes["/google.longrunning.Operations/GetOperation"] is Shape.UNARY_UNARY


def test_admin_client_through_proxy(
    via_proxy: FaultProxy, table_id: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_table = Client(project=PROJECT, admin=True).instance(INSTANCE).table(table_id)
    assert admin_table.exists()
    assert set(admin_table.list_column_families()) == {FAMILY}
    with pytest.raises(gexc.AlreadyExists):  # the upstream's error status, unchanged
        admin_table.create(column_families={FAMILY: None})
    assert via_proxy.stats().methods == {
        "/google.bigtable.admin.v2.BigtableTableAdmin/GetTable": 2,
        "/google.bigtable.admin.v2.BigtableTableAdmin/CreateTable": 1,
    }
    with monkeypatch.context() as patch:
        patch.setenv(BIGTABLE_ENV, emulator.address)
        direct = Client(project=PROJECT, admin=True).instance(INSTANCE).table(table_id)
        assert set(direct.list_column_families()) == {FAMILY}


def test_pass_through_writes_exactly_the_rows(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows(100)
    table.bulk_mutate_rows(_entries(rows))
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows
    assert _read_all(table) == rows  # ReadRows (server streaming) through the proxy as well
    stats = via_proxy.stats()
    assert (stats.calls, stats.entries_seen, stats.entries_forwarded) == (1, 100, 100)
    assert stats.calls_failed == stats.entries_failed == stats.entries_rejected == 0
    assert stats.requests == (tuple((key, 1) for key in rows),)
    assert stats.empty_mutation_entries == 0


def test_ping_and_warm_through_proxy(via_proxy: FaultProxy, emulator: Emulator) -> None:
    # With BIGTABLE_EMULATOR_HOST set the data client skips its channel warm-up, so no
    # PingAndWarm is sent at startup; it is still forwarded when called.
    request = PingAndWarmRequest(name=f"projects/{PROJECT}/instances/{INSTANCE}")
    answers = []
    for address in (via_proxy.address, emulator.address):
        with grpc.insecure_channel(address) as channel:
            ping = channel.unary_unary(
                PING_AND_WARM,
                request_serializer=PingAndWarmRequest.serialize,
                response_deserializer=PingAndWarmResponse.deserialize,
            )
            answers.append(ping(request, timeout=5))
    assert answers[0] == answers[1]
    assert via_proxy.stats().methods == {PING_AND_WARM: 1}


def test_upstream_statuses_pass_through(
    via_proxy: FaultProxy, table_id: str, emulator: Emulator
) -> None:
    missing = MutateRowsRequest(table_name=_table_name("missing"), entries=[_set_cell(b"k")])
    no_entries = MutateRowsRequest(table_name=_table_name(table_id), entries=[])
    for request, code in (
        (missing, grpc.StatusCode.NOT_FOUND),
        (no_entries, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        answers = []
        for address in (via_proxy.address, emulator.address):
            with pytest.raises(grpc.RpcError) as raised:
                _raw_mutate_rows(address, request)
            answers.append((raised.value.code(), raised.value.details()))
        assert answers[0] == answers[1]
        assert answers[0][0] == code

    # A method no installed client knows is still relayed (as a bidirectional stream).
    unknown = []
    for address in (via_proxy.address, emulator.address):
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary("/google.bigtable.v2.Bigtable/NoSuchMethod")(b"", timeout=5)
            unknown.append((raised.value.code(), raised.value.details()))
    assert unknown[0] == unknown[1]
    assert unknown[0][0] == grpc.StatusCode.UNIMPLEMENTED

    # Per-entry upstream statuses come back at the client's indexes, next to injected ones.
    entries = [_set_cell(_key(i), FAMILY if i % 2 else "no-such-family") for i in range(20)]
    request = MutateRowsRequest(table_name=_table_name(table_id), entries=entries)
    direct = _statuses(_raw_mutate_rows(emulator.address, request))
    via_proxy.fail_entries(0.3, codes=(grpc.StatusCode.ABORTED,), seed=3)
    proxied = _statuses(_raw_mutate_rows(via_proxy.address, request))
    injected = {i for i in range(20) if draw(3, "entry", 0, i) < 0.3}
    assert injected and len(injected) < 20
    assert set(proxied) == set(range(20))
    for i in range(20):
        if i in injected:
            assert proxied[i][0] == grpc.StatusCode.ABORTED.value[0]
        else:
            assert proxied[i] == direct[i]
    # The emulator answers an unknown family per entry with INTERNAL (13), not NOT_FOUND.
    assert {direct[i][0] for i in range(0, 20, 2)} == {grpc.StatusCode.INTERNAL.value[0]}


# -- whole-call failures ----------------------------------------------------------------------


def test_fail_all_calls_writes_nothing(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_calls(1.0)
    rows = _rows(20)
    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(rows), retryable_errors=(), operation_timeout=5)
    failures = _failures(raised.value)
    assert set(failures) == set(range(20))
    assert all(isinstance(c, gexc.ServiceUnavailable) for cs in failures.values() for c in cs)
    stats = via_proxy.stats()
    assert (stats.calls, stats.calls_failed, stats.entries_forwarded) == (1, 1, 0)
    assert _upstream_rows(emulator, table_id, monkeypatch) == {}


def test_fail_all_calls_exhausts_retries(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_calls(1.0)
    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(_rows(5)), operation_timeout=1.0)
    assert set(_failures(raised.value)) == set(range(5))
    stats = via_proxy.stats()
    assert stats.calls > 1 and stats.calls == stats.calls_failed  # retried, all refused
    assert _upstream_rows(emulator, table_id, monkeypatch) == {}


def test_half_the_calls_fail_and_retries_write_everything(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected_failures = next(k for k in count() if draw(0, "call", k) >= 0.5)
    assert expected_failures >= 1  # seed 0 fails the first call: the retry path runs
    via_proxy.fail_calls(0.5, seed=0)
    rows = _rows(50)
    table.bulk_mutate_rows(_entries(rows))  # default retries include UNAVAILABLE
    stats = via_proxy.stats()
    assert stats.calls_failed == expected_failures
    assert stats.calls == expected_failures + 1
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows


def test_fail_first_attempts(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_first_attempts(2)
    rows = _rows(10)
    table.bulk_mutate_rows(_entries(rows))
    stats = via_proxy.stats()
    assert (stats.calls, stats.calls_failed, stats.entries_forwarded) == (3, 2, 10)
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows


def test_outage_fails_every_call_until_it_ends_then_records_the_resumption(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ends = via_proxy.outage(1.5)
    rows = _rows(10)
    for _ in range(3):  # every call inside the outage fails as a whole, nothing applied
        with pytest.raises(MutationsExceptionGroup) as raised:
            table.bulk_mutate_rows(_entries(rows), retryable_errors=(), operation_timeout=5)
        failures = _failures(raised.value)
        assert all(isinstance(c, gexc.ServiceUnavailable) for cs in failures.values() for c in cs)
    during = via_proxy.stats()
    assert (during.calls, during.calls_failed, during.outage_calls) == (3, 3, 3)
    assert during.outage_ended == ends and during.resumed is None
    assert _upstream_rows(emulator, table_id, monkeypatch) == {}
    # Default retries include UNAVAILABLE: the client gets through once the outage is over.
    table.bulk_mutate_rows(_entries(rows), operation_timeout=30)
    after = via_proxy.stats()
    assert after.resumed is not None and after.resumed >= ends
    assert after.entries_forwarded == 10
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows
    assert "outage_calls=" in after.line()


# -- per-entry failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
    ],
    ids=lambda code: code.name,
)
def test_fail_entries_with_any_status_code(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    code: grpc.StatusCode,
) -> None:
    via_proxy.fail_entries(0.25, codes=(code,), seed=4)
    rows = _rows(40)
    expected = {i for i in range(40) if draw(4, "entry", 0, i) < 0.25}
    assert 0 < len(expected) < 40
    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(rows), retryable_errors=())
    failures = _failures(raised.value)
    assert set(failures) == expected
    wanted = type(gexc.from_grpc_status(code, ""))
    assert all(type(c) is wanted for cs in failures.values() for c in cs)
    assert {c for _, c in via_proxy.stats().injected} == {code}
    written = {key: v for i, (key, v) in enumerate(rows.items()) if i not in expected}
    assert _upstream_rows(emulator, table_id, monkeypatch) == written


def test_fail_entries_internal_reported_at_their_indexes(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client's MutateRows defaults retry only DEADLINE_EXCEEDED and UNAVAILABLE.
    defaults = tuple(table.default_mutate_rows_retryable_errors)
    assert set(defaults) == {gexc.DeadlineExceeded, gexc.ServiceUnavailable}
    via_proxy.fail_entries(0.3, codes=(grpc.StatusCode.INTERNAL,), seed=0)
    rows = _rows(100)
    keys = list(rows)
    expected = {i for i in range(100) if draw(0, "entry", 0, i) < 0.3}
    assert 15 < len(expected) < 45

    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(rows), retryable_errors=defaults)
    failures = _failures(raised.value)
    assert set(failures) == expected
    assert all(isinstance(c, gexc.InternalServerError) for cs in failures.values() for c in cs)

    stats = via_proxy.stats()
    assert stats.calls == 1  # INTERNAL is not retried by the client
    assert {keys.index(key) for key, _ in stats.injected} == expected
    assert stats.entries_failed == len(expected)
    assert stats.entries_forwarded == 100 - len(expected)
    written = {key: v for i, (key, v) in enumerate(rows.items()) if i not in expected}
    assert _upstream_rows(emulator, table_id, monkeypatch) == written


def test_fail_entries_unavailable_retried_until_written(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_entries(0.3, codes=(grpc.StatusCode.UNAVAILABLE,), seed=1)
    rows = _rows(60)
    table.bulk_mutate_rows(_entries(rows))
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows
    stats = via_proxy.stats()
    assert stats.calls >= 2 and stats.entries_failed >= 1
    # The retry carries exactly the entries the first call failed (the client maps the
    # proxy's indexes back correctly), each with its mutation intact.
    failed_first = {_key(i) for i in range(60) if draw(1, "entry", 0, i) < 0.3}
    assert {key for key, _ in stats.requests[1]} == failed_first
    assert all(n == 1 for request in stats.requests for _, n in request)


def test_reject_keys_are_permanent_and_not_applied(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rejected = {5, 42, 77}
    via_proxy.reject_keys({_key(i) for i in rejected}, message="poison row")
    rows = _rows(100)
    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(rows))  # default retries: INVALID_ARGUMENT is final
    failures = _failures(raised.value)
    assert set(failures) == rejected
    for causes in failures.values():
        assert len(causes) == 1
        assert isinstance(causes[0], gexc.InvalidArgument)
        assert "poison row" in str(causes[0])
    stats = via_proxy.stats()
    assert (stats.calls, stats.entries_rejected, stats.entries_forwarded) == (1, 3, 97)
    written = {key: v for i, (key, v) in enumerate(rows.items()) if i not in rejected}
    assert _upstream_rows(emulator, table_id, monkeypatch) == written


def test_concurrent_writers_under_faults_lose_nothing(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_calls(0.2, seed=5)
    via_proxy.fail_entries(0.2, codes=(grpc.StatusCode.UNAVAILABLE,), seed=5)
    rows = {f"w{w}-{i:03d}".encode(): f"{w}/{i}".encode() for w in range(8) for i in range(250)}
    batches = [dict(list(rows.items())[n : n + 50]) for n in range(0, len(rows), 50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda batch: table.bulk_mutate_rows(_entries(batch)), batches))
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows
    stats = via_proxy.stats()
    assert stats.calls >= len(batches)
    assert stats.calls_failed >= sum(draw(5, "call", k) < 0.2 for k in range(len(batches)))
    assert stats.calls_failed > 0 and stats.entries_failed > 0


# -- delays and deadlines ---------------------------------------------------------------------


def test_delay_beyond_attempt_timeout_raises_deadline_exceeded(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.delay_calls(2.0)
    with pytest.raises(MutationsExceptionGroup) as raised:
        table.bulk_mutate_rows(_entries(_rows(10)), attempt_timeout=0.5, operation_timeout=1.2)
    failures = _failures(raised.value)
    assert set(failures) == set(range(10))
    assert all(isinstance(c, gexc.DeadlineExceeded) for cs in failures.values() for c in cs)
    stats = via_proxy.stats()
    assert stats.calls >= 2 and stats.calls_delayed == stats.calls  # retried after each timeout
    assert stats.entries_forwarded == 0  # abandoned attempts are never applied
    assert _upstream_rows(emulator, table_id, monkeypatch) == {}


def test_short_delay_within_attempt_timeout_passes(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.delay_calls(0.3)
    rows = _rows(10)
    table.bulk_mutate_rows(_entries(rows), attempt_timeout=3.0, operation_timeout=5.0)
    stats = via_proxy.stats()
    assert (stats.calls, stats.calls_delayed, stats.entries_forwarded) == (1, 1, 10)
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows


# -- regression guard: entries without mutations -----------------------------------------------


def test_empty_mutation_entry_is_counted_and_forwarded(
    via_proxy: FaultProxy, table_id: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a retry that reuses a consumed DirectRow would send: an entry with no mutations.
    # Next to a complete entry, the emulator answers it OK and writes nothing for it.
    mixed = MutateRowsRequest(
        table_name=_table_name(table_id),
        entries=[_set_cell(b"full"), {"row_key": b"empty", "mutations": []}],
    )
    direct = _statuses(_raw_mutate_rows(emulator.address, mixed))
    proxied = _statuses(_raw_mutate_rows(via_proxy.address, mixed))
    assert proxied == direct == {0: (0, ""), 1: (0, "")}  # the emulator's answer, unchanged
    assert set(_upstream_rows(emulator, table_id, monkeypatch)) == {b"full"}

    # A request with no mutations at all is refused as a whole.
    alone = MutateRowsRequest(
        table_name=_table_name(table_id), entries=[{"row_key": b"empty", "mutations": []}]
    )
    answers = []
    for address in (emulator.address, via_proxy.address):
        with pytest.raises(grpc.RpcError) as raised:
            _raw_mutate_rows(address, alone)
        answers.append((raised.value.code(), raised.value.details()))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.INVALID_ARGUMENT

    stats = via_proxy.stats()
    assert stats.empty_mutation_entries == 2
    assert (stats.calls, stats.entries_forwarded) == (2, 3)
    assert stats.requests == (((b"full", 1), (b"empty", 0)), ((b"empty", 0),))


# -- rules and CLI ----------------------------------------------------------------------------


def test_reset_clears_every_rule(
    via_proxy: FaultProxy,
    table: Table,
    table_id: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_proxy.fail_calls(1.0)
    via_proxy.fail_entries(1.0)
    via_proxy.fail_first_attempts(5)
    via_proxy.delay_calls(10.0)
    via_proxy.reject_keys([_key(0)])
    via_proxy.outage(600)
    via_proxy.reset()
    rows = _rows(5)
    table.bulk_mutate_rows(_entries(rows), operation_timeout=5)
    assert _upstream_rows(emulator, table_id, monkeypatch) == rows
    with pytest.raises(ValueError, match="ratio"):
        via_proxy.fail_calls(1.5)
    with pytest.raises(ValueError, match="non-OK"):
        via_proxy.fail_entries(0.1, codes=(grpc.StatusCode.OK,))


def test_cli_runs_until_signalled(
    emulator: Emulator, table_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = [sys.executable, "-m", "tests.faults.proxy", "--upstream", emulator.address]
    command += ["--reject-key", "row-001", "--stats-every", "0.2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("fault proxy 127.0.0.1:"), banner
        address = banner.split()[2]
        request = MutateRowsRequest(
            table_name=_table_name(table_id), entries=[_set_cell(_key(0)), _set_cell(_key(1))]
        )
        statuses = _statuses(_raw_mutate_rows(address, request))
        assert statuses[0][0] == grpc.StatusCode.OK.value[0]
        assert statuses[1][0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "final: calls=1 " in out and "rejected=1" in out
    assert set(_upstream_rows(emulator, table_id, monkeypatch)) == {_key(0)}
