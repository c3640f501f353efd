"""Out-of-order traffic -> the pipeline -> rollups equal to aggregates computed from the ledger.

The expected aggregates are computed here from the ledger's record of every message sent
(row key, event time, cells), independently of the pipeline's rollup code.
"""

import json
import math
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import pytest
from google.cloud.bigtable.data import BigtableDataClient, ReadRowsQuery

from loadgen.process import PipelineProcess
from loadgen.traffic import TrafficOptions
from tests.helpers.load import publish_load, verify_load
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

WINDOW_MS = 10_000
TRAFFIC = TrafficOptions(
    seed=11,
    invalid_ratio=0.05,
    duplicate_ratio=0.05,
    late_ratio=0.3,
    out_of_order_seconds=300,  # far behind the watermark, well within the allowed lateness
    users=200,
    devices=20,  # consent traffic has the seed's five domains
)


def _window(ts_micros: int) -> str:
    start = ts_micros // 1000 // WINDOW_MS * WINDOW_MS
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start / 1000)) + ".000Z"


def expected_rollups(ledger: Path) -> dict[str, dict[str, Any]]:
    """(key#window) -> aggregate values, from every sent message that became a row."""
    consent: dict[str, dict[tuple[str, int], list[str]]] = defaultdict(dict)
    telemetry: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    with sqlite3.connect(ledger) as db:
        rows = db.execute(
            "SELECT table_group, row_key, ts, cells FROM messages"
            " WHERE expect='row' AND status='sent'"
        )
        for group, key, ts, cells_json in rows:
            cells = json.loads(cells_json)
            if group == "consent":
                domain, user = key.split("#")
                granted = json.loads(cells["cf1:services"])
                consent[f"{domain}#{_window(ts)}"][(user, ts)] = granted
            else:
                device = key.rsplit("#", 1)[0]
                readings = {c[2:]: float(v) for c, v in cells.items() if c.startswith("r:")}
                telemetry[f"{device}#{_window(ts)}"][ts] = readings
    expected: dict[str, dict[str, Any]] = {}
    for key, requests in consent.items():
        values: dict[str, Any] = {
            "consent:requests": len(requests),
            "consent:distinct_users": len({user for user, _ in requests}),
        }
        for granted in requests.values():
            for service in granted:
                name = f"consent:service:{service}"
                values[name] = values.get(name, 0) + 1
        expected[key] = values
    for key, by_time in telemetry.items():
        stats: dict[str, Any] = {"telemetry:readings": len(by_time)}
        series: dict[str, list[float]] = defaultdict(list)
        for reading in by_time.values():
            for name, value in reading.items():
                series[name].append(value)
        for name, points in series.items():
            stats[f"telemetry:{name}:count"] = len(points)
            stats[f"telemetry:{name}:min"] = min(points)
            stats[f"telemetry:{name}:max"] = max(points)
            stats[f"telemetry:{name}:mean"] = sum(points) / len(points)
        expected[key] = stats
    return expected


def stored_rollups(resources: TestResources) -> dict[str, dict[str, Any]]:
    """The rollup table, newest version of each cell, numbers parsed."""
    stored: dict[str, dict[str, Any]] = {}
    with BigtableDataClient(project=PROJECT) as client:
        table = client.get_table(resources.instance, resources.table("rollup"))
        for row in table.read_rows(ReadRowsQuery()):
            values: dict[str, Any] = {}
            newest: dict[str, int] = {}
            for cell in row.cells:
                name = f"{cell.family}:{cell.qualifier.decode()}"
                if cell.timestamp_micros >= newest.get(name, -1):
                    newest[name] = cell.timestamp_micros
                    text = cell.value.decode()
                    values[name] = float(text) if "." in text else int(text)
            stored[row.row_key.decode()] = values
    return stored


def history(resources: TestResources, keys: list[str]) -> list[str]:
    """Every stored version (pane) of the count cells of some rows: what a failure needs."""
    lines = []
    with BigtableDataClient(project=PROJECT) as client:
        table = client.get_table(resources.instance, resources.table("rollup"))
        for key in keys:
            row = table.read_row(key.encode())
            for cell in row.cells if row else []:
                if cell.qualifier in (b"requests", b"readings"):
                    lines.append(f"{key} pane@{cell.timestamp_micros}: {cell.value.decode()}")
    return lines


def differences(
    expected: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]]
) -> list[str]:
    problems = [f"missing rollup {key}" for key in expected.keys() - stored.keys()]
    problems += [f"unexpected rollup {key}" for key in stored.keys() - expected.keys()]
    for key in expected.keys() & stored.keys():
        want, got = expected[key], stored[key]
        if want.keys() != got.keys():
            problems.append(f"{key}: columns {sorted(want.keys() ^ got.keys())}")
            continue
        for name, value in want.items():
            if not math.isclose(float(value), float(got[name]), rel_tol=1e-9):
                problems.append(f"{key} {name}: expected {value}, stored {got[name]}")
    return problems


def _sdk_worker_processes(pipeline: PipelineProcess) -> int:
    """SDK workers the pipeline runs as processes of its own (LOOPBACK ones are threads)."""
    children = psutil.Process(pipeline.process.pid).children(recursive=True)
    return sum("sdk_worker import SdkHarness" in " ".join(c.cmdline()) for c in children)


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_rollups_equal_aggregates_from_the_ledger(
    resources: TestResources, tmp_path: Path, worker: str
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    pipeline = PipelineProcess(
        resources.flags(
            f"--window_seconds={WINDOW_MS // 1000}",
            "--allowed_lateness_seconds=3600",
            f"--rollup_worker={worker}",
        ),
        tmp_path / "pipeline.log",
    )
    try:
        publish_load(resources, ledger, count=2000, rate=400, options=TRAFFIC)
        # With --rollup_worker=process the keyed rollup stages run in a worker of their own.
        assert _sdk_worker_processes(pipeline) == (1 if worker == "process" else 0)
        verdict = verify_load(resources, ledger)
        assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
        assert verdict.too_late == 0
        expected = expected_rollups(ledger)
        deadline = time.monotonic() + 90
        problems = ["not compared yet"]
        while problems and time.monotonic() < deadline:
            # Windows fire as the watermark passes their end (the source moves it to "now"
            # when the subscription is idle); late events re-fire their windows.
            time.sleep(2)
            problems = differences(expected, stored_rollups(resources))
    finally:
        pipeline.stop()
    failing = sorted({p.split(" ")[0].rstrip(":") for p in problems if "#" in p})[:3]
    assert problems == [], "\n".join(problems[:20] + history(resources, failing))
    assert len(expected) > 50  # many domain and device windows, early and late ones
