"""Out-of-order traffic -> the pipeline -> rollups equal to aggregates computed from the ledger.

The expected aggregates are computed here from the ledger's record of every message sent
(row key, event time, cells), independently of the pipeline's rollup code.
"""

import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from google.cloud.bigtable.data import BigtableDataClient

from loadgen.process import PipelineProcess
from loadgen.rollup_oracle import differences, expected_rollups, stored_rollups
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


def stored(resources: TestResources) -> dict[str, dict[str, Any]]:
    return stored_rollups(PROJECT, resources.instance, resources.table("rollup"))


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


def _sdk_worker_processes(pipeline: PipelineProcess) -> int:
    """SDK workers the pipeline runs as processes of its own (LOOPBACK ones are threads)."""
    children = psutil.Process(pipeline.process.pid).children(recursive=True)
    return sum("sdk_worker import SdkHarness" in " ".join(c.cmdline()) for c in children)


# One process (the launcher alone), or the default: the keyed rollup stages and a second
# ingest in a worker process.
PROCESSES = {"one process": ("--rollup_worker=thread", "--ingest_processes=1"), "default": ()}


@pytest.mark.parametrize("processes", list(PROCESSES))
def test_rollups_equal_aggregates_from_the_ledger(
    resources: TestResources, tmp_path: Path, processes: str
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    pipeline = PipelineProcess(
        resources.flags(
            f"--window_seconds={WINDOW_MS // 1000}",
            "--allowed_lateness_seconds=3600",
            *PROCESSES[processes],
        ),
        tmp_path / "pipeline.log",
    )
    try:
        publish_load(resources, ledger, count=2000, rate=400, options=TRAFFIC)
        assert _sdk_worker_processes(pipeline) == (0 if processes == "one process" else 1)
        verdict = verify_load(resources, ledger)
        assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
        assert verdict.too_late == 0
        expected = expected_rollups(ledger, WINDOW_MS)
        deadline = time.monotonic() + 90
        problems = ["not compared yet"]
        while problems and time.monotonic() < deadline:
            # Windows fire as the watermark passes their end (the source moves it to "now"
            # when the subscription is idle); late events re-fire their windows.
            time.sleep(2)
            problems = differences(expected, stored(resources))
    finally:
        pipeline.stop()
    failing = sorted({p.split(" ")[0].rstrip(":") for p in problems if "#" in p})[:3]
    assert problems == [], "\n".join(problems[:20] + history(resources, failing))
    assert len(expected) > 50  # many domain and device windows, early and late ones
