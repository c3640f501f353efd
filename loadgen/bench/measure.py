"""What the bench measures of the processes taking part: CPU by role, peak memory, rates."""

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence

import psutil

PIPELINE = "pipeline (python SDK harness)"
PRISM = "prism runner"
PUBSUB = "pubsub emulator"
BIGTABLE = "bigtable emulator"
LOADGEN = "load generator (this process)"
ROLLUP_WORKER = "rollup SDK worker (process)"
RAW_LOOP = "raw loop (process)"  # python -m loadgen.ceiling: the baseline at offered rates
# The SDK worker processes the launcher's pool spawns (--rollup_worker=process), or those of
# an EXTERNAL worker pool: the keyed rollup stages, apart from the rows'.
WORKER_COMMANDS = ("worker_pool_main", "sdk_worker import SdkHarness")
# Every process of the pipeline itself: the launcher with its LOOPBACK harness, the workers
# and Prism (what the bench reports as the pipeline's CPU and memory).
PIPELINE_ROLES = (PIPELINE, ROLLUP_WORKER, PRISM)


def role(proc: psutil.Process, me: int) -> str:
    """Which part of the run a process is ('' for the rest of the machine)."""
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return ""
    if proc.pid == me:
        return LOADGEN
    if "stream.main" in cmd:
        return PIPELINE
    if "loadgen.ceiling" in cmd:
        return RAW_LOOP
    if any(part in cmd for part in WORKER_COMMANDS):
        return ROLLUP_WORKER
    if name.startswith("prism"):
        return PRISM
    if name == "cbtemulator":
        return BIGTABLE
    if name == "java" and "pubsub-emulator" in cmd:
        return PUBSUB
    return ""


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of every process on the machine that takes part, by role."""
    me = os.getpid()
    totals: dict[str, float] = {}
    for proc in psutil.process_iter():
        part = role(proc, me)
        if not part:
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        totals[part] = totals.get(part, 0.0) + times.user + times.system
    return totals


def cpu_share(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores used per role over an interval (1.0 = one core busy all the time)."""
    return {
        part: round((after.get(part, 0.0) - before.get(part, 0.0)) / seconds, 2)
        for part in sorted(after)
        if seconds > 0
    }


def micros_per_message(
    before: dict[str, float], after: dict[str, float], messages: int
) -> dict[str, float]:
    """CPU microseconds per message, per role, over an interval that handled `messages`."""
    if messages <= 0:
        return {}
    return {
        part: round((after.get(part, 0.0) - before.get(part, 0.0)) * 1e6 / messages, 1)
        for part in sorted(after)
    }


class CpuTimeline:
    """CPU seconds by role, sampled every second in the background, to cut out any interval."""

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []  # (epoch s, cpu by role)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), cpu_seconds()))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "CpuTimeline":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, moment: float) -> dict[str, float]:
        """The sample nearest to `moment` (epoch seconds)."""
        return min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]

    def per_message(self, ingested_ms: Sequence[int]) -> dict[str, float]:
        """CPU us per message between the 5th and 95th percentile of the ingest times.

        Start-up (imports, Prism, the harness) and the tail are left out: what remains is
        the cost of a message while the pipeline is busy with them.
        """
        if len(ingested_ms) < 20 or len(self.samples) < 2:
            return {}
        low = ingested_ms[len(ingested_ms) // 20] / 1000
        high = ingested_ms[len(ingested_ms) * 19 // 20] / 1000
        start, end = self.at(low), self.at(high)
        # the messages ingested between the two samples actually taken
        t0 = min(self.samples, key=lambda sample: abs(sample[0] - low))[0] * 1000
        t1 = min(self.samples, key=lambda sample: abs(sample[0] - high))[0] * 1000
        handled = sum(1 for ms in ingested_ms if t0 <= ms < t1)
        return micros_per_message(start, end, handled)


class RssSampler:
    """Peak resident memory of each role's processes (and in all), sampled in the background."""

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self.peak_total = 0
        self.peak_by_role: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        sizes: Counter[str] = Counter()
        for proc in psutil.process_iter():
            part = role(proc, me)
            if part and part != LOADGEN:
                try:
                    sizes[part] += proc.memory_info().rss
                except psutil.Error:
                    continue
        pipeline = sum(sizes[part] for part in PIPELINE_ROLES)
        self.peak_total = max(self.peak_total, pipeline)
        for part, rss in sizes.items():
            self.peak_by_role[part] = max(self.peak_by_role[part], rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, object]:
        """Peaks in MiB: the pipeline's processes together, and every role alone."""
        return {
            "peak_rss_mib": round(self.peak_total / 2**20, 1),
            "peak_rss_mib_by_process": {
                part: round(rss / 2**20, 1) for part, rss in sorted(self.peak_by_role.items())
            },
        }


def bulk_rate(ingested_ms: Sequence[int]) -> float:
    """Rows per second between the 5th and 95th percentile of ingest times (any order).

    Excludes start-up and the tail (the last few hundred messages can wait for a reader's
    long poll to come back), which say little about throughput.
    """
    if len(ingested_ms) < 20:
        return 0.0
    ingested_ms = sorted(ingested_ms)  # read back in row-key order, not time order
    low = ingested_ms[len(ingested_ms) // 20]
    high = ingested_ms[len(ingested_ms) * 19 // 20]
    return round(0.9 * len(ingested_ms) / ((high - low) / 1000), 1) if high > low else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values, 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(stamps: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Publish -> row latency (s): ingest time minus the event time stamped at publish."""
    seconds = [(ingested - event) / 1000 for event, ingested in stamps]
    return {
        "p50": round(percentile(seconds, 0.50), 3),
        "p95": round(percentile(seconds, 0.95), 3),
        "p99": round(percentile(seconds, 0.99), 3),
        "max": round(max(seconds, default=0.0), 3),
    }
