"""Failures between the pipeline and Bigtable: the table still ends exactly right.

The Bigtable emulator never fails on its own, so writes go through the fault proxy
(tests/faults/proxy.py); results are read back from the emulator directly.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.readback import pull_letters, read_table, table_rows
from stream.launch.options import to_config
from stream.names import BIGTABLE_ENV
from stream.pipeline.build import build_pipeline
from stream.pipeline.config import BigtableTarget
from stream.pipeline.io.bigtable import REJECTED, WriteRowsFn
from stream.pipeline.io.pubsub_native import NativeSource
from stream.pipeline.io.sink import BigtableSink
from stream.pipeline.messages import ValidEvent
from tests.faults.proxy import FaultProxy
from tests.helpers.builders import consent_body, encoded
from tests.helpers.load import publish, publish_load, verify_load, wait_for
from tests.helpers.resources import PROJECT, TestResources, new_resources

pytestmark = [pytest.mark.faults, pytest.mark.emulator, pytest.mark.slow]

CELLS_PER_CONSENT_V1 = 2


def _consent_messages(count: int) -> tuple[list[tuple[bytes, dict[str, str]]], list[str]]:
    messages: list[tuple[bytes, dict[str, str]]] = []
    keys: list[str] = []
    now = datetime.now(UTC)
    for _ in range(count):
        body = consent_body(domain="faults.example.com", when=now)
        messages.append((encoded(body), {}))
        keys.append(f"faults.example.com#{body['user']}")
    return messages, keys


def _writes_per_key(proxy: FaultProxy) -> dict[str, list[int]]:
    """Row key -> the number of mutations of each MutateRows entry that carried it."""
    seen: dict[str, list[int]] = defaultdict(list)
    for request in proxy.stats().requests:
        for key, mutations in request:
            seen[key.decode()].append(mutations)
    return seen


def _assert_one_version_per_cell(resources: TestResources, keys: list[str]) -> None:
    table = read_table(PROJECT, resources.instance, resources.table("consent"))
    assert sorted(table) == sorted(keys)
    for key, columns in table.items():
        assert len(columns) == CELLS_PER_CONSENT_V1, key
        for column, versions in columns.items():
            assert len(versions) == 1, f"{key} {column}: {versions}"


# --- 1. an element fails once per bundle: the runner retries the whole bundle -------------

FAILED_ONCE: set[str] = set()  # module state: the DirectRunner re-pickles DoFns per bundle


class _FailFirstAttemptFn(WriteRowsFn):
    """WriteRowsFn failing the first attempt of chosen rows.

    It fails after writing the rows before them in the bundle (batch of 1), as a crash in
    the middle of a bundle would.
    """

    def __init__(self, target: BigtableTarget, doomed: frozenset[str]) -> None:
        super().__init__(target)
        self._doomed = doomed

    @no_annotations
    def process(
        self,
        event: ValidEvent,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        window: BoundedWindow = beam.DoFn.WindowParam,
    ) -> Iterator[WindowedValue | TaggedOutput]:
        key = event.event.row_key()
        if key in self._doomed and key not in FAILED_ONCE:
            FAILED_ONCE.add(key)
            raise RuntimeError(f"injected failure on the first attempt of {key}")
        yield from super().process(event, timestamp, window)


class _FailingSink(BigtableSink):
    def __init__(self, target: BigtableTarget, topic: str, doomed: frozenset[str]) -> None:
        super().__init__(target, topic)
        self._doomed = doomed

    def write_rows(self) -> beam.PTransform:
        fn = _FailFirstAttemptFn(self._target, self._doomed)
        return beam.ParDo(fn).with_outputs(REJECTED, main="written")


def test_failed_element_makes_the_runner_retry_its_whole_bundle(
    resources: TestResources, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages, keys = _consent_messages(60)
    doomed = frozenset(keys[5::12])  # 5 rows, each somewhere inside a bundle of 10
    FAILED_ONCE.clear()
    publish(resources.topic, messages)
    monkeypatch.setenv(BIGTABLE_ENV, proxy.address)
    options = PipelineOptions(
        resources.flags("--runner=BundleBasedDirectRunner", "--write_batch_rows=1")
    )
    config = to_config(options)
    pipeline = beam.Pipeline(options=options)
    sink = _FailingSink(config.bigtable, config.pubsub.dead_letter_topic, doomed)
    build_pipeline(pipeline, NativeSource(config.pubsub), sink, config)
    result = pipeline.run()
    try:
        done = wait_for(
            lambda: table_rows(PROJECT, resources.instance, resources.table("consent")) >= 60,
            timeout=120,
        )
    finally:
        result.cancel()
    assert done

    assert FAILED_ONCE == doomed  # every injected failure happened
    _assert_one_version_per_cell(resources, keys)
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []
    # Evidence of whole-bundle retries: rows written before a failing element in its bundle
    # were written again when the bundle was retried; doomed rows were written once.
    writes = _writes_per_key(proxy)
    rewritten = [key for key in keys if len(writes[key]) > 1]
    assert rewritten, "no bundle was retried"
    assert all(len(writes[key]) == 1 for key in doomed)
    assert all(n == CELLS_PER_CONSENT_V1 for ns in writes.values() for n in ns)


# --- 2 + 4 + 6. transient failures under load: exact table, complete retries --------------


def test_transient_failures_under_load_verify_clean(
    resources: TestResources, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.fail_calls(0.10, seed=1)  # 10% of MutateRows calls: UNAVAILABLE
    proxy.fail_entries(0.05, codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), seed=2)
    pipeline = PipelineProcess(
        resources.flags(), tmp_path / "pipeline.log", env={BIGTABLE_ENV: proxy.address}
    )
    try:
        stats = publish_load(resources, tmp_path / "ledger.sqlite", count=2500, rate=500)
        verdict = verify_load(resources, tmp_path / "ledger.sqlite")
    finally:
        pipeline.stop()
    faults = proxy.stats()
    assert stats.sent == 2500
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert faults.calls_failed > 0 and faults.entries_failed > 0
    # The writer retried failed entries in place: the job never failed or restarted.
    assert "restarting in" not in pipeline.log()
    # 4. No retry ever sent an empty or partial row: every attempt of a row carried all the
    # cells of one of the events sent for that key (a consumed DirectRow would send 0).
    assert faults.empty_mutation_entries == 0
    complete: dict[str, set[int]] = defaultdict(set)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for group in ledger.table_groups():
            for events in ledger.expected_rows(group):
                complete[events[0].row_key] |= {len(e.cells) for e in events}
    # (Only event rows: the rollup rows go through the same faulty proxy, keyed by window.)
    per_key = {k: ns for k, ns in _writes_per_key(proxy).items() if k in complete}
    assert sum(len(ns) - 1 for ns in per_key.values()) > 0  # some rows were sent again
    partial = {k: ns for k, ns in per_key.items() if not set(ns) <= complete[k]}
    assert partial == {}


# --- 3. permanent per-row errors: those rows dead-lettered, every other row written --------


def test_permanently_rejected_rows_go_to_the_dead_letter(
    resources: TestResources, proxy: FaultProxy, tmp_path: Path
) -> None:
    messages, keys = _consent_messages(40)
    rejected = set(keys[::8])
    proxy.reject_keys({key.encode() for key in rejected}, code=grpc.StatusCode.INVALID_ARGUMENT)
    publish(resources.topic, messages)
    pipeline = PipelineProcess(
        resources.flags(), tmp_path / "pipeline.log", env={BIGTABLE_ENV: proxy.address}
    )
    try:
        letters = pull_letters(
            resources.dead_letter_subscription, expected=len(rejected), timeout=90
        )
        wait_for(
            lambda: (
                table_rows(PROJECT, resources.instance, resources.table("consent"))
                >= len(keys) - len(rejected)
            ),
            timeout=60,
        )
    finally:
        pipeline.stop()
    _assert_one_version_per_cell(resources, [k for k in keys if k not in rejected])
    assert len(letters) == len(rejected)
    by_key = {
        json.loads(letter.data)["domain"] + "#" + json.loads(letter.data)["user"]: letter
        for letter in letters
    }
    assert set(by_key) == rejected
    for letter in letters:
        assert letter.attributes["deadletter_kind"] == "write_rejected"
        assert letter.attributes["deadletter_stage"] == "write"
        assert "rejected by FaultProxy" in letter.attributes["deadletter_error"]


# --- 5. failures beyond the runner's retries ---------------------------------------------


def test_direct_runner_loses_a_bundle_that_fails_beyond_its_retries(
    resources: TestResources, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The DirectRunner acknowledges on read and gives up on a bundle after 4 attempts.

    Bigtable is down for good (longer than each attempt's 2 s of backoff in place): the
    pipeline fails, and the messages it had read are gone from the subscription without
    rows. This documents a limit of the local fallback runner; the pull source (Prism) and
    Dataflow do not acknowledge before the write.
    """
    messages, keys = _consent_messages(10)
    publish(resources.topic, messages)
    proxy.fail_calls(1.0)
    pipeline = PipelineProcess(
        resources.flags(
            "--runner=BundleBasedDirectRunner",
            "--write_timeout_seconds=2",
            "--write_retry_seconds=2",
            "--max_restarts=0",
        ),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    try:
        pipeline.process.wait(timeout=180)
    finally:
        pipeline.stop()
    assert pipeline.process.returncode == 1, pipeline.log()[-3000:]
    assert table_rows(PROJECT, resources.instance, resources.table("consent")) == 0
    assert pull_letters(resources.subscription, expected=len(keys), timeout=5) == []  # acked: lost


def test_prism_restarts_after_an_outage_and_loses_nothing(
    emulators: object, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Prism fails the job on a bundle error; the launcher restarts it.

    Bigtable stays down longer than the writers may back off in place (5 s here, 15 minutes
    by default). Prism has no bundle retries: the job fails, gives back the messages it
    never acknowledged, and the restarted job writes them once Bigtable is back.
    """
    resources = new_resources(ack_deadline=20)  # >= 2 x write timeout (5 s) + 10 s
    messages, keys = _consent_messages(30)
    proxy.fail_calls(1.0)
    pipeline = PipelineProcess(
        resources.flags("--write_timeout_seconds=5", "--write_retry_seconds=5", "--max_restarts=5"),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    try:
        publish(resources.topic, messages)
        assert wait_for(lambda: "pipeline failed; restarting" in pipeline.log(), timeout=90)
        proxy.reset()  # Bigtable is back
        done = wait_for(
            lambda: table_rows(PROJECT, resources.instance, resources.table("consent")) >= 30,
            timeout=120,
        )
    finally:
        pipeline.stop()
    assert done, pipeline.log()[-3000:]
    _assert_one_version_per_cell(resources, keys)
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []
    restarts = Counter(line for line in pipeline.log().splitlines() if "restarting in" in line)
    assert sum(restarts.values()) >= 1
