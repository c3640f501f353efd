"""The fault phase's measures (loadgen/bench), on hand-made numbers.

The phase itself needs the emulators, Prism and ~10 minutes (`python -m loadgen.bench.faults`,
or `--quick` for ~4): it is a benchmark, run by `make bench`, not a test.
"""

import pytest

from loadgen.bench.measure import bulk_rate, latency, percentile

pytestmark = pytest.mark.faults


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([], 0.99) == 0.0


def test_bulk_rate_counts_the_middle_ninety_percent() -> None:
    # 100 rows, one every 10 ms: the 5th is at 50 ms, the 95th at 950 ms.
    ingested = [10 * i for i in range(100)]
    assert bulk_rate(ingested) == 100.0  # 90 rows in 0.9 s
    assert bulk_rate(ingested[:19]) == 0.0  # too few to say
    assert bulk_rate([5] * 40) == 0.0  # all at once: no interval
    # Rows come back in key order: the rate is the same whatever the order (it read 0).
    assert bulk_rate(list(reversed(ingested))) == 100.0
    assert bulk_rate(ingested[50:] + ingested[:50]) == 100.0


def test_latency_is_ingest_minus_event_time() -> None:
    stamps = [(1000, 1000 + 10 * i) for i in range(100)]  # 0 ms .. 990 ms
    assert latency(stamps) == {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 0.99}
    assert latency([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
