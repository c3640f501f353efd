"""The cost phase: CPU per message at the rates users run, beside the raw loop's, and latency.

Per configuration, one process (the pipeline with its defaults, or the raw loop) runs
throughout: first idle, then each offered rate for `PUBLISH_SECONDS`; the CPU of the
process and all its children (Prism, the rollup worker) is summed over `WINDOW_SECONDS`
after `WARMUP_SECONDS` of each rate, and divided by the messages ingested in that window.
With rollups on, each window's first rollup row is watched for: its lag behind the window's
end is the rollups' latency.
"""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from google.cloud.bigtable.data import BigtableDataClient

from loadgen.bench import load, measure
from loadgen.process import PipelineProcess
from loadgen.readback import rows
from loadgen.seed import SEED_DOMAINS
from stream import names

RATES = (100.0, 300.0, 1000.0)
WARMUP_SECONDS = 10.0
WINDOW_SECONDS = 20.0
PUBLISH_SECONDS = 40.0
START_SECONDS = 15.0  # the process's start-up (Prism, SDK workers) before the idle window
ROLLUP_TABLE = "scale-rollups"
ROLLUP_WINDOW_SECONDS = 60  # the pipeline's default --window_seconds
ROLLUP_WAIT_SECONDS = 10.0  # after the last window's end, before giving up on its row
POLL_SECONDS = 0.25


@dataclass
class CostPoint:
    """One offered rate (0: idle) and what it cost."""

    offered_rate: float
    messages: int = 0  # ingested inside the measured window
    cores: dict[str, float] = field(default_factory=dict)  # per role
    cpu_us_per_message: dict[str, float] = field(default_factory=dict)  # per role, and total
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    latency_max: float = 0.0
    rollup_windows: int = 0  # windows whose first row was seen
    rollup_windows_missing: int = 0
    rollup_lag_p50: float | None = None  # first row seen - window end (s)
    rollup_lag_max: float | None = None


class RollupWatch:
    """Polls the rollup table for a phase's window rows; when each was first seen."""

    def __init__(self, client: BigtableDataClient, phase: str) -> None:
        self._client = client
        self._prefix = load.prefix(phase)
        self.first_seen: dict[str, float] = {}  # row key -> epoch seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            now = time.time()
            keys = rows(
                self._client, names.LOCAL_INSTANCE, ROLLUP_TABLE, self._prefix, keys_only=True
            )
            for key, _ in keys:
                self.first_seen.setdefault(key, now)

    def __enter__(self) -> "RollupWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _window_end(key: str) -> float:
    """Epoch seconds of the end of the window a rollup row key names (`domain#start`)."""
    start = datetime.fromisoformat(key.rsplit("#", 1)[1])  # RFC 3339 with Z: aware, UTC
    return start.timestamp() + ROLLUP_WINDOW_SECONDS


def _last_window_end(last: float) -> float:
    """The end of the window holding an event published at `last` (epoch seconds)."""
    return (last // ROLLUP_WINDOW_SECONDS + 1) * ROLLUP_WINDOW_SECONDS


def _rollup_lags(point: CostPoint, watch: RollupWatch, first: float, last: float) -> None:
    """How late each window's first row came, and how many windows had none."""
    lags = sorted(seen - _window_end(key) for key, seen in watch.first_seen.items())
    windows = int(last // ROLLUP_WINDOW_SECONDS - first // ROLLUP_WINDOW_SECONDS) + 1
    point.rollup_windows = len(lags)
    point.rollup_windows_missing = max(0, windows * len(SEED_DOMAINS) - len(lags))
    if lags:
        point.rollup_lag_p50 = round(measure.percentile(lags, 0.5), 2)
        point.rollup_lag_max = round(lags[-1], 2)


def measure_rate(
    client: BigtableDataClient,
    topic: str,
    rate: float,
    roles: tuple[str, ...],
    rollups: bool,
) -> CostPoint:
    """Offer `rate` for PUBLISH_SECONDS; CPU over the window after the warm-up; latencies."""
    point = CostPoint(offered_rate=rate)
    phase = f"c{int(rate)}-{uuid.uuid4().hex[:6]}"
    print(f"bench: cost at {rate:.0f}/s")
    published = [0]

    def offer() -> None:
        published[0], _ = load.publish(topic, phase, rate, None, PUBLISH_SECONDS)

    publisher = threading.Thread(target=offer, daemon=True)
    with RollupWatch(client, phase) if rollups else _NoWatch() as watch:
        first = time.time()
        publisher.start()
        time.sleep(WARMUP_SECONDS)
        start, before = time.time(), measure.cpu_seconds()
        time.sleep(WINDOW_SECONDS)
        end, after = time.time(), measure.cpu_seconds()
        publisher.join()
        last = time.time()
        load.wait_rows(client, phase, published[0], 120.0)
        if rollups:
            wait = _last_window_end(last) + ROLLUP_WAIT_SECONDS - time.time()
            time.sleep(max(0.0, wait))
    stamps = load.ingest_stamps(client, phase)
    point.messages = sum(1 for _, ingested in stamps if start * 1000 <= ingested < end * 1000)
    point.cores = measure.cpu_share(before, after, end - start)
    per_role = measure.micros_per_message(before, after, point.messages)
    picked = {role: per_role.get(role, 0.0) for role in roles}
    point.cpu_us_per_message = {**picked, "total": round(sum(picked.values()), 1)}
    latency = measure.latency(stamps)
    point.latency_p50, point.latency_p99 = latency["p50"], latency["p99"]
    point.latency_max = latency["max"]
    if rollups and isinstance(watch, RollupWatch):
        _rollup_lags(point, watch, first, last)
    print(f"bench: cost at {rate:.0f}/s: {point}")
    return point


class _NoWatch:
    def __enter__(self) -> "_NoWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def measure_idle(roles: tuple[str, ...]) -> CostPoint:
    """Cores used with nothing to do."""
    point = CostPoint(offered_rate=0.0)
    start, before = time.time(), measure.cpu_seconds()
    time.sleep(WINDOW_SECONDS)
    point.cores = measure.cpu_share(before, measure.cpu_seconds(), time.time() - start)
    point.cores["total"] = round(sum(point.cores.get(role, 0.0) for role in roles), 2)
    print(f"bench: cost idle: {point.cores}")
    return point


Starter = Callable[[list[str], Path], PipelineProcess]


def cost_phase(
    client: BigtableDataClient,
    tag: str,
    start: Starter,
    rates: list[float],
    roles: tuple[str, ...],
    rollups: bool,
    log_dir: Path,
) -> list[CostPoint]:
    """Idle, then each rate, through one process started by `start(flags, log)`."""
    topic, flags = load.phase_topic(tag)
    process = start(flags, log_dir / f"bench-{tag}.log")
    try:
        time.sleep(START_SECONDS)
        points = [measure_idle(roles)]
        points += [measure_rate(client, topic, rate, roles, rollups) for rate in rates]
    finally:
        process.stop()
    return points


def raw_loop(flags: list[str], log: Path) -> PipelineProcess:
    """The raw loop as a process of its own, recording ingest times."""
    return PipelineProcess(flags, log, module="loadgen.ceiling")
