"""An overloaded Bigtable (entries answered RESOURCE_EXHAUSTED) slows the pipeline, never stops it.

The issue's run: 5% of MutateRows entries RESOURCE_EXHAUSTED while 2,500 messages arrive at
500/s. Before, every batch held one such entry, the job failed and restarted until the
launcher gave up. Now the writer backs off in place and retries only those entries: the
ledger verifies exactly, the job never restarts, and the time spent backing off shows as
`cumulativeThrottlingSeconds` (the status line's `throttled=`).
"""

import re
from pathlib import Path

import grpc
import pytest

from loadgen.process import PipelineProcess
from stream.names import BIGTABLE_ENV
from tests.faults.proxy import FaultProxy
from tests.helpers.load import publish_load, verify_load, wait_for
from tests.helpers.resources import TestResources

pytestmark = [pytest.mark.faults, pytest.mark.emulator, pytest.mark.slow]

THROTTLED = re.compile(r"status: .* throttled=(\d+(?:\.\d+)?)s")


def throttled_seconds(log: str) -> float:
    """The last `throttled=N.Ns` of the pipeline's status lines (0 when never throttled).

    Exact to the millisecond (the writers count every sleep, rounded up), so any backoff at
    all shows: no whole second has to be reached by chance.
    """
    values = [float(v) for v in THROTTLED.findall(log)]
    return values[-1] if values else 0.0


def assert_never_restarted(pipeline: PipelineProcess) -> None:
    """The process stayed up and the launcher never logged a failed or restarted job."""
    assert pipeline.alive(), pipeline.log()[-3000:]
    log = pipeline.log()
    assert "pipeline failed" not in log, log[-3000:]
    assert "restarting in" not in log


@pytest.mark.parametrize("ratio", [0.05, 0.5], ids=["5%", "50%"])
def test_resource_exhausted_entries_under_load_verify_clean_without_a_restart(
    resources: TestResources, proxy: FaultProxy, tmp_path: Path, ratio: float
) -> None:
    proxy.fail_entries(ratio, codes=(grpc.StatusCode.RESOURCE_EXHAUSTED,), seed=3)
    # Batches of 100 rows, not 500: five times the MutateRows calls for the same load.
    pipeline = PipelineProcess(
        resources.flags("--write_batch_rows=100"),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    try:
        stats = publish_load(resources, tmp_path / "ledger.sqlite", count=2500, rate=500)
        verdict = verify_load(resources, tmp_path / "ledger.sqlite", timeout=180)
        # Counters reach the status line a little after the rows (Prism's metrics lag).
        wait_for(lambda: throttled_seconds(pipeline.log()) > 0, timeout=30)
        assert_never_restarted(pipeline)
    finally:
        pipeline.stop()
    faults = proxy.stats()
    assert stats.sent == 2500
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert faults.entries_failed > 0
    assert faults.empty_mutation_entries == 0  # every retry carried its rows whole
    assert throttled_seconds(pipeline.log()) > 0, pipeline.log()[-3000:]
