"""A one-line status every few seconds: events read, rows written, dead letters, rates.

Rare conditions are shown only while they are true: `throttled=N.Ns` (time the writers spent
backing off) and `redelivered=N` (messages pulled again while this process still held them).
"""

import time
from collections.abc import Callable, Mapping

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from stream.pipeline import metrics


def counter_totals(result: PipelineResult) -> dict[str, int]:
    """Current value of every counter in the pipeline's namespace (attempted values)."""
    totals: dict[str, int] = {}
    # Fresh on Prism only with stream/launch/patches.py's fresh_metrics (the launcher applies it).
    ours = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    # Throttling is counted under each backing-off DoFn's own namespace (metrics.py).
    throttling = result.metrics().query(MetricsFilter().with_name(metrics.THROTTLING_SECONDS))
    for entry in [*ours["counters"], *throttling["counters"]]:
        name = entry.key.metric.name
        value = entry.committed if entry.committed is not None else entry.attempted
        value = max(value or 0, entry.attempted or 0)
        totals[name] = totals.get(name, 0) + int(value)
    return totals


def format_status(now: Mapping[str, int], before: Mapping[str, int], seconds: float) -> str:
    """`read=N (r/s) written=N (r/s) deadletter=N (r/s) acked=N` for one interval."""

    def part(label: str, key: str) -> str:
        total = now.get(key, 0)
        rate = (total - before.get(key, 0)) / seconds if seconds > 0 else 0.0
        return f"{label}={total} ({rate:.0f}/s)"

    parts = [
        part("read", metrics.READ),
        part("written", metrics.WRITTEN),
        part("deadletter", metrics.DEAD_LETTERED),
        part("acked", metrics.ACKED),
    ]
    throttled_ms = now.get(metrics.WRITE_THROTTLED_MS, 0)
    if throttled_ms:  # exact; cumulativeThrottlingSeconds counts whole seconds only
        parts.append(f"throttled={throttled_ms / 1000:.1f}s")
    elif now.get(metrics.THROTTLING_SECONDS, 0):
        parts.append(f"throttled={now[metrics.THROTTLING_SECONDS]}s")
    redelivered = now.get(metrics.REDELIVERED_WHILE_HELD, 0)
    if redelivered:
        parts.append(f"redelivered={redelivered}")
    return "status: " + " ".join(parts)


class StatusPrinter:
    """Calls `emit` with a status line at most every `interval` seconds."""

    def __init__(self, result: PipelineResult, interval: float, emit: Callable[[str], None]):
        self._result = result
        self._interval = interval
        self._emit = emit
        self._last: dict[str, int] = {}
        self._last_time = time.monotonic()

    def tick(self) -> None:
        """Print a line if the interval has passed (metrics errors never stop the pipeline)."""
        now = time.monotonic()
        if self._interval <= 0 or now - self._last_time < self._interval:
            return
        try:
            totals = counter_totals(self._result)
        except Exception as exc:
            self._emit(f"status: metrics unavailable ({exc})")
            totals = self._last
        self._emit(format_status(totals, self._last, now - self._last_time))
        self._last, self._last_time = totals, now
