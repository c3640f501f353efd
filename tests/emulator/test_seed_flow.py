"""The seed product's flow on the emulators: its request files replayed, every line its row.

The lines come from `loadgen seed-files` (the seed generator's exact format). Rows are read
back independently and compared with the lines themselves, besides the ledger's verify.
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from loadgen.readback import Table, pull_letters, read_table
from loadgen.seed import write_request_files
from loadgen.traffic import Replay
from tests.helpers.load import replay_file, verify_load
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

LINES = 3000
CATALOG = Path(__file__).parents[1] / "fixtures" / "seed-service-catalog.txt"


def _requests(path: Path) -> dict[str, list[str]]:
    """Row key -> services, straight from the request lines (domain#user, as the seed keyed)."""
    requests = [json.loads(line) for line in path.read_text().splitlines()]
    return {f"{r['domain']}#{r['user']}": r["services"] for r in requests}


def _rfc3339(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _assert_rows_are_the_lines(table: Table, requests: dict[str, list[str]]) -> None:
    assert set(table) == set(requests)
    for key, services in requests.items():
        row = table[key]
        assert set(row) == {("cf1", "services"), ("cf1", "message_timestamp")}
        (ts, value), = row[("cf1", "services")]  # fmt: skip
        assert json.loads(value) == services, key
        (stamp_ts, stamp), = row[("cf1", "message_timestamp")]  # fmt: skip
        assert stamp_ts == ts and stamp.decode() == _rfc3339(ts), key  # one event, its time


def _replay(
    resources: TestResources, tmp_path: Path, replay: Replay, *flags: str
) -> dict[str, list[str]]:
    (path,) = write_request_files(tmp_path / "requests", LINES, files=1, seed=2021)
    pipeline = PipelineProcess(resources.flags(*flags), tmp_path / "pipeline.log")
    try:
        stats = replay_file(resources, tmp_path / "ledger.sqlite", path, replay, rate=1500)
        verdict = verify_load(resources, tmp_path / "ledger.sqlite")
    finally:
        code = pipeline.stop()
    assert stats.sent == LINES and stats.failed == 0
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert (verdict.sent, verdict.rows, verdict.deadletter) == (LINES, LINES, 0)
    assert code == 0, pipeline.log()[-3000:]
    return _requests(path)


def test_seed_file_replayed_stamped_becomes_every_row(
    resources: TestResources, tmp_path: Path
) -> None:
    # with the seed's catalog: every id the seed generator picks is a known service
    requests = _replay(resources, tmp_path, Replay(stamp=True), f"--service_catalog={CATALOG}")
    table = read_table(PROJECT, resources.instance, resources.table("consent"))
    _assert_rows_are_the_lines(table, requests)


def test_seed_file_replayed_unstamped_takes_the_publish_time(
    resources: TestResources, tmp_path: Path
) -> None:
    before = datetime.now(UTC)
    requests = _replay(
        resources, tmp_path, Replay(stamp=False), "--missing_event_time=publish_time"
    )
    after = datetime.now(UTC)
    table = read_table(PROJECT, resources.instance, resources.table("consent"))
    _assert_rows_are_the_lines(table, requests)
    low, high = (int(t.timestamp() * 1_000_000) for t in (before, after))
    assert all(low - 1000 <= row[("cf1", "services")][0][0] <= high for row in table.values())


def _backfill(resources: TestResources, pattern: str, *flags: str) -> None:
    argv = resources.flags(f"--input={pattern}", "--status_interval_seconds=0", *flags,
                           streaming=False)  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "stream.main", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_timestamp_less_backfill_twice_rewrites_the_same_cells(
    resources: TestResources, tmp_path: Path
) -> None:
    paths = write_request_files(tmp_path / "requests", 800, files=2, seed=5)
    mtime = datetime(2021, 3, 5, 10, 20, 30, 123_000, tzinfo=UTC)  # 1614939630.123 s
    for path in paths:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    pattern = str(tmp_path / "requests" / "requests-*.jsonl")

    _backfill(resources, pattern, "--missing_event_time=file_mtime")
    first = read_table(PROJECT, resources.instance, resources.table("consent"))
    _backfill(resources, pattern, "--missing_event_time=file_mtime")
    second = read_table(PROJECT, resources.instance, resources.table("consent"))

    requests = {k: v for path in paths for k, v in _requests(path).items()}
    _assert_rows_are_the_lines(second, requests)
    assert second == first  # replayed: the same cells, one version each
    stamps = {row[("cf1", "message_timestamp")][0] for row in second.values()}
    assert stamps == {(1_614_939_630_123_000, b"2021-03-05T10:20:30.123Z")}
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []


def test_without_a_fallback_the_unstamped_lines_are_missing_their_time(
    resources: TestResources, tmp_path: Path
) -> None:
    (path,) = write_request_files(tmp_path / "requests", 20, files=1, seed=6)
    _backfill(resources, str(path))
    assert read_table(PROJECT, resources.instance, resources.table("consent")) == {}
    letters = pull_letters(resources.dead_letter_subscription, expected=20, timeout=30)
    assert len(letters) == 20
    assert {letter.attributes["deadletter_kind"] for letter in letters} == {"missing_field"}
    assert {letter.data for letter in letters} == {
        line.encode() for line in path.read_text().splitlines()
    }  # the raw line, unchanged


def test_make_seed_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    """`make seed-demo ARGS=--unstamped`: its own emulators and pipeline, verify, HTTP lookups."""
    repo = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "seed-demo", "--count", "300", "--rate", "300",
         "--unstamped"],
        cwd=tmp_path,  # its .run/ goes here
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "verify: sent=300 rows=300 deadletter=0 lost=0 duplicated=0 unexpected=0" in output
    assert output.count(": as the request line") == 3, output[-4000:]
