"""`make bench`: the pipeline beside the raw-client ceiling, in one run on the same emulators.

Phases (fresh emulators on free ports; each phase writes rows under its own domain):
1. ceiling: drain a backlog with the raw loop (1 and 2 threads);
2. pipeline drain: a backlog published before the pipeline starts; drain rate and peak RSS
   of the pipeline's process tree (Python SDK harness + Prism);
3. pipeline sustained: offered rates in steps of `step_seconds`; per step the achieved
   ingest rate and publish->row latency from the rows' `ingested_at` cells; a step is
   sustained when latency does not grow across it (backlog bounded) and it drains at once;
4. the DirectRunner's drain rate, for comparison;
5. a py-spy profile of the pipeline process during a sustained step.
Writes bench/results.json and bench/throughput.png. Nothing here asserts timings.
"""

import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import psutil
from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient

from loadgen import ceiling
from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.readback import count_rows, rows
from loadgen.report import Progress
from loadgen.seed import endpoint_timestamp, seed_request
from loadgen.traffic import Planned, planned_row
from stream import names
from stream.launch.options import to_config
from stream.local import environment as local
from stream.local.emulators import Emulators
from stream.local.provision import ensure_subscription, ensure_topic
from stream.pipeline.config import IngestConfig
from stream.pipeline.io.batch_writer import INGESTED_AT

RUN_DIR = Path(".run")


def _phase(name: str) -> tuple[str, list[str]]:
    """A topic and subscription of its own for one phase, and the pipeline flags to use it.

    Phases must not share a subscription: messages a stopped pipeline had pulled (or a pull
    still pending when it died) stay leased until the ack deadline, and would stall the next
    phase by that long.
    """
    topic = names.topic_path(names.LOCAL_PROJECT, f"bench-{name}")
    subscription = names.subscription_path(names.LOCAL_PROJECT, f"bench-{name}-sub")
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        ensure_topic(publisher, topic)
        ensure_subscription(subscriber, subscription, topic, 130)
    return topic, [f"--subscription={subscription}"]


@dataclass
class Step:
    """One offered rate held for a while, and what the pipeline made of it."""

    offered_rate: float
    seconds: float
    published: int = 0
    publish_rate: float = 0.0
    rows: int = 0
    ingest_rate: float = 0.0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    latency_p99: float = 0.0
    latency_growth: float = 0.0  # median latency, last third minus first third (s)
    cores_used: dict[str, float] = field(default_factory=dict)
    drain_seconds: float = 0.0  # after publishing stopped, until 99.9% of the rows landed
    straggler_seconds: float = 0.0  # ... until the very last row landed
    latency_max: float = 0.0
    sustained: bool = False
    note: str = ""


@dataclass
class Results:
    """Everything `make bench` measured (serialised to bench/results.json)."""

    started: str
    machine: dict[str, Any]
    ceiling: list[dict[str, Any]] = field(default_factory=list)
    # per configuration: "rollups on" (the default) and "rollups off" (rows only)
    pipeline_drain: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[str, list[Step]] = field(default_factory=dict)
    direct_runner_drain: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)


def _messages(domain: str) -> Iterator[Planned]:
    """Seed-shaped consent.v1 events with unique keys under `domain`, stamped when generated."""
    rng = random.Random(domain)  # noqa: S311 - traffic, not cryptography
    while True:
        request = seed_request(rng)
        request["domain"] = domain  # a phase's rows are counted by their key prefix
        request["message_timestamp"] = endpoint_timestamp(datetime.now(UTC))
        yield planned_row("consent.v1", request)


def _publish(
    topic: str, domain: str, rate: float, count: int | None, seconds: float | None
) -> tuple[int, float]:
    progress = Progress(rate, count, seconds)
    started = time.monotonic()
    stats = Publisher(topic, None, rate).run(_messages(domain), progress, count, seconds)
    progress.finish(stats)
    return stats.sent, time.monotonic() - started


INGESTED = INGESTED_AT.decode()


def _prefix_rows(client: BigtableDataClient, domain: str) -> list[tuple[int, int]]:
    """(event time ms, ingested ms) of every row under `domain`."""
    result = []
    for _, versions in rows(client, names.LOCAL_INSTANCE, "scale-traffic", prefix=f"{domain}#"):
        ingested = [(ts, value) for _, qualifier, ts, value in versions if qualifier == INGESTED]
        if ingested:
            result.append((ingested[0][0] // 1000, int(ingested[0][1])))
    return result


def _count_prefix(client: BigtableDataClient, domain: str) -> int:
    return count_rows(client, names.LOCAL_INSTANCE, "scale-traffic", prefix=f"{domain}#")


class _WrittenHint:
    """The pipeline's own `written=N` status counter: a cheap "probably done" signal.

    Scanning the table every second to see progress costs the load generator a sizeable
    share of a core, which the pipeline then lacks; the status line costs nothing.
    """

    def __init__(self, pipeline: PipelineProcess | None) -> None:
        self._pipeline = pipeline
        self.value = 0

    def update(self) -> int:
        if self._pipeline is not None:
            for line in self._pipeline.new_lines("status:"):
                match = re.search(r"written=(\d+)", line)
                if match:
                    self.value = int(match.group(1))
        return self.value


def _wait_rows(
    client: BigtableDataClient,
    domain: str,
    expected: int,
    timeout: float,
    hint: _WrittenHint | None = None,
) -> int:
    """Wait until `expected` rows exist under `domain`.

    Scans only when the hint says so, or when the hint stopped moving for 15 s (Prism's
    counters can lag): a scan reads every row so far, and scanning a 200,000-row prefix
    every 10 s cost this process 0.76 of a core that the pipeline then lacked.
    """
    deadline = time.monotonic() + timeout
    base = hint.update() if hint else 0
    last_change, last_seen, last_scan = time.monotonic(), base, 0.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = time.monotonic()
        seen = hint.update() if hint else last_seen
        if seen != last_seen:
            last_change, last_seen = now, seen
        hinted = hint is None or seen - base >= expected
        stalled = now - max(last_change, last_scan) >= 15
        if (hinted and now - last_scan >= 3) or stalled:
            last_scan = now
            if _count_prefix(client, domain) >= expected:
                break
    return _count_prefix(client, domain)


def _bulk_rate(ingested_ms: list[int]) -> float:
    """Rows per second between the 5th and 95th percentile of ingest times.

    Excludes start-up and the tail (the last few hundred messages can wait for a reader's
    long poll to come back), which say little about throughput.
    """
    if len(ingested_ms) < 20:
        return 0.0
    low = ingested_ms[len(ingested_ms) // 20]
    high = ingested_ms[len(ingested_ms) * 19 // 20]
    return round(0.9 * len(ingested_ms) / ((high - low) / 1000), 1) if high > low else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of every process on the machine that takes part, by role."""
    roles = {
        "cbtemulator": "bigtable emulator",
        "java": "pubsub emulator",
    }
    me = os.getpid()
    totals: Counter[str] = Counter()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None:
            continue
        name = info.get("name") or ""
        cmd = " ".join(info.get("cmdline") or [])
        if info["pid"] == me:
            role = "load generator (this process)"
        elif "stream.main" in cmd:
            role = "pipeline (python SDK harness)"
        elif name.startswith("prism"):
            role = "prism runner"
        else:
            role = roles.get(name, "")
        if role:
            totals[role] += times.user + times.system
    return dict(totals)


def _cpu_share(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores used per role over an interval (1.0 = one core busy all the time)."""
    return {
        role: round((after.get(role, 0.0) - before.get(role, 0.0)) / seconds, 2)
        for role in sorted(after)
        if seconds > 0
    }


class _RssSampler:
    """Peak RSS of a process and its children, sampled in the background."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self.peak_total = 0
        self.peak_by_name: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                procs = [self._process, *self._process.children(recursive=True)]
                sizes = {p.name(): p.memory_info().rss for p in procs}
            except psutil.Error:
                continue
            self.peak_total = max(self.peak_total, sum(sizes.values()))
            for name, rss in sizes.items():
                self.peak_by_name[name] = max(self.peak_by_name[name], rss)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _pipeline(flags: list[str], log: Path) -> PipelineProcess:
    return PipelineProcess(
        ["--streaming", "--record_ingest_time", "--status_interval_seconds=5", *flags], log
    )


def _drain_phase(
    client: BigtableDataClient, backlog: int, flags: list[str], name: str
) -> dict[str, Any]:
    domain = f"{name}.bench.example.com"
    topic, phase_flags = _phase(name)
    print(f"bench: {name}: publishing a backlog of {backlog} before the pipeline starts")
    sent, _ = _publish(topic, domain, 1e9, backlog, None)
    pipeline = _pipeline([*phase_flags, *flags], RUN_DIR / f"bench-{name}.log")
    started = time.monotonic()
    cpu_before = _cpu_seconds()
    with _RssSampler(pipeline.process.pid) as rss:
        hint = _WrittenHint(pipeline)
        rows = _wait_rows(client, domain, sent, max(300.0, backlog / 50), hint)
        elapsed = time.monotonic() - started
    cores = _cpu_share(cpu_before, _cpu_seconds(), elapsed)
    pipeline.stop()
    ingest = sorted(i for _, i in _prefix_rows(client, domain))
    result = {
        "backlog": sent,
        "rows": rows,
        "lost": sent - rows,
        "seconds_from_start": round(elapsed, 1),
        "drain_rate": _bulk_rate(ingest),
        "peak_rss_mib": round(rss.peak_total / 2**20, 1),
        "peak_rss_mib_by_process": {k: round(v / 2**20, 1) for k, v in rss.peak_by_name.items()},
        "cores_used": cores,
    }
    print(f"bench: {name}: {json.dumps(result)}")
    return result


def _step(
    client: BigtableDataClient, topic: str, rate: float, seconds: float, hint: _WrittenHint
) -> Step:
    step = Step(offered_rate=rate, seconds=seconds)
    domain = f"s{int(rate)}-{uuid.uuid4().hex[:6]}.bench.example.com"
    print(f"bench: step {rate:.0f}/s for {seconds:.0f}s")
    cpu_before = _cpu_seconds()
    step.published, took = _publish(topic, domain, rate, None, seconds)
    step.cores_used = _cpu_share(cpu_before, _cpu_seconds(), took)
    step.publish_rate = round(step.published / took, 1)
    stopped = time.time() * 1000
    step.rows = _wait_rows(client, domain, step.published, seconds + 120, hint)
    stamps = sorted(_prefix_rows(client, domain))
    if not stamps:
        step.note = "no rows"
        return step
    latencies = [(i - e) / 1000 for e, i in stamps]
    step.latency_p50 = round(_percentile(latencies, 0.50), 3)
    step.latency_p95 = round(_percentile(latencies, 0.95), 3)
    step.latency_p99 = round(_percentile(latencies, 0.99), 3)
    step.latency_max = round(max(latencies), 3)
    third = max(1, len(latencies) // 3)
    step.latency_growth = round(
        statistics.median(latencies[-third:]) - statistics.median(latencies[:third]), 3
    )
    ingested = sorted(i for _, i in stamps)
    step.ingest_rate = _bulk_rate(ingested)
    # A bounded backlog drains right after publishing stops. One straggler (measured: a
    # single row 9 s late among 60,000 at p99 0.29 s) is a latency outlier, reported as
    # such, not a backlog: "sustained" looks at when 99.9% of the rows had landed.
    step.drain_seconds = round(max(0.0, (_percentile(ingested, 0.999) - stopped) / 1000), 2)
    step.straggler_seconds = round(max(0.0, (max(ingested) - stopped) / 1000), 2)
    publisher_ok = step.publish_rate >= 0.95 * rate
    step.sustained = (
        publisher_ok
        and step.rows == step.published
        and step.latency_growth <= 2.0
        and step.drain_seconds <= 5.0
    )
    if not publisher_ok:
        step.note = "publisher could not offer this rate"
    print(f"bench: step result {json.dumps(asdict(step))}")
    return step


def _profile(pid: int, seconds: int, output: Path) -> dict[str, Any]:
    """py-spy the pipeline process; summarise where its Python time goes."""
    raw = output / "profile.txt"
    try:
        subprocess.run(  # noqa: S603 - py-spy from our venv
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"py-spy failed: {exc}"}
    return summarise_profile(raw.read_text())


# Buckets for "where the time goes", matched against the frames of each sample.
PROFILE_BUCKETS = (
    ("bigtable mutate_rows", ("bulk_mutate_rows",)),
    ("pubsub pull", ("PullMessagesFn._pull",)),
    ("pubsub acknowledge", ("AcknowledgeFn.finish_bundle",)),
    ("dead-letter publish", ("PublishDeadLettersFn",)),
    ("validation (pydantic)", ("validate (stream/pipeline/validate.py",)),
    ("row building", ("mutation_entry",)),
    ("beam data plane / coders", ("data_plane", "coder_impl", "encode", "decode")),
    ("idle / waiting", ("wait (threading", "_wait_once", "select", "poll")),
)


def summarise_profile(collapsed: str) -> dict[str, Any]:
    """Share of samples per bucket (first matching bucket wins), from py-spy raw output."""
    totals: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        bucket = next(
            (name for name, keys in PROFILE_BUCKETS if any(k in stack for k in keys)), "other"
        )
        totals[bucket] += count
    share = {name: round(100 * n / samples, 1) for name, n in totals.most_common()}
    return {"samples": samples, "percent_of_samples": share}


def _plot(results: Results, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = 0.0
    for (name, steps), style in zip(results.steps.items(), ("o-", "s--"), strict=False):
        offered = [s.offered_rate for s in steps]
        top = max([top, *offered])
        left.plot(offered, [s.ingest_rate for s in steps], style, label=f"pipeline, {name}")
        for s in steps:
            if not s.sustained:
                left.annotate("not sustained", (s.offered_rate, s.ingest_rate), fontsize=8)
        for q, marker in (("p50", "o"), ("p99", "^")):
            right.plot(
                offered,
                [getattr(s, f"latency_{q}") for s in steps],
                style[1:] + marker,
                label=f"{q}, {name}",
            )
    if top:
        left.plot([0, top], [0, top], ":", color="grey", label="offered = ingested")
    best = results.summary.get("ceiling_rate", 0.0)
    if best:
        left.axhline(best, color="red", linestyle="--", label=f"raw-client ceiling {best:.0f}/s")
    direct = results.direct_runner_drain.get("drain_rate", 0.0)
    if direct:
        left.axhline(direct, color="purple", linestyle="-.", label=f"DirectRunner {direct:.0f}/s")
    left.set_xlabel("offered rate (messages/s)")
    left.set_ylabel("rows/s")
    left.set_title("Throughput vs offered rate (Prism)")
    left.legend(fontsize=7)
    right.set_xlabel("offered rate (messages/s)")
    right.set_ylabel("publish -> row latency (s)")
    right.set_title("Latency vs offered rate (Prism)")
    right.set_yscale("log")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / "throughput.png", dpi=110)


CONFIGS = {"rollups on": [], "rollups off": ["--rollups=off"]}
PHASES = ("ceiling", "drain", "steps", "profile", "direct")


def _steps(
    client: BigtableDataClient,
    name: str,
    flags: list[str],
    rates: list[float],
    seconds: float,
    best_ceiling: float,
) -> tuple[list[Step], PipelineProcess, str, _WrittenHint]:
    topic, phase_flags = _phase(f"steps-{name.replace(' ', '-')}")
    pipeline = _pipeline(
        [*phase_flags, *flags], RUN_DIR / f"bench-steps-{name.replace(' ', '-')}.log"
    )
    hint = _WrittenHint(pipeline)
    time.sleep(8)  # start-up (Prism, SDK harness) before offering load
    steps = []
    for rate in rates:
        step = _step(client, topic, rate, seconds, hint)
        steps.append(step)
        if not step.sustained or step.offered_rate > 1.2 * best_ceiling:
            break
    return steps, pipeline, topic, hint


def run_bench(
    output: Path,
    quick: bool,
    backlog: int,
    phases: tuple[str, ...] = PHASES,
    configs: tuple[str, ...] = tuple(CONFIGS),
) -> int:
    """Run the phases for the configs; write results.json and throughput.png into `output`."""
    chosen = {name: flags for name, flags in CONFIGS.items() if name in configs}
    output.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(exist_ok=True)
    step_seconds = 15.0 if quick else 60.0
    rates = [500.0, 1000.0, 2000.0] if quick else [500.0 * n for n in range(1, 9)]
    results = Results(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine={
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "beam": beam.version.__version__,
            "quick": quick,
            "backlog": backlog,
            "phases": list(phases),
            "configs": list(chosen),
        },
    )
    with ExitStack() as stack:
        stack.enter_context(Emulators(log_dir=RUN_DIR, reuse_env=False))
        config: IngestConfig = to_config(PipelineOptions(["--streaming"]))
        local.provision(config)
        with BigtableDataClient(project=names.LOCAL_PROJECT) as client:
            if "ceiling" in phases:
                ceiling_n = 10_000 if quick else 60_000
                for threads in (1, 2):
                    domain = f"ceiling{threads}.bench.example.com"
                    topic, flags = _phase(f"ceiling{threads}")
                    print(f"bench: ceiling with {threads} thread(s), {ceiling_n} messages")
                    sent, _ = _publish(topic, domain, 1e9, ceiling_n, None)
                    phase_config = to_config(PipelineOptions(["--streaming", *flags]))
                    outcome = ceiling.drain(phase_config, sent, threads)
                    results.ceiling.append({**asdict(outcome), "rate": round(outcome.rate, 1)})
                    print(f"bench: ceiling {threads} thread(s): {outcome.rate:.0f}/s")
            best_ceiling = max((c["rate"] for c in results.ceiling), default=0.0)
            if "drain" in phases:
                for name, flags in chosen.items():
                    # The full backlog for the default config (or the only one chosen).
                    full = name == "rollups on" or len(chosen) == 1
                    n = backlog if full else min(backlog, 60_000)
                    tag = f"drain-{name.replace(' ', '-')}"
                    results.pipeline_drain[name] = _drain_phase(client, n, flags, tag)
            if "steps" in phases:
                for name, flags in chosen.items():
                    steps, pipeline, topic, hint = _steps(
                        client, name, flags, rates, step_seconds, best_ceiling or 1e9
                    )
                    results.steps[name] = steps
                    if "profile" in phases and name == "rollups on":
                        sustained = [s.offered_rate for s in steps if s.sustained]
                        rate = max(sustained, default=500.0)
                        print(f"bench: profiling the pipeline at {rate:.0f}/s")
                        profiler = threading.Thread(
                            target=lambda pid: results.profile.update(_profile(pid, 15, output)),
                            args=(pipeline.process.pid,),
                            daemon=True,
                        )
                        profiler.start()
                        _step(client, topic, rate, 20.0, hint)
                        profiler.join()
                    pipeline.stop()
            if "direct" in phases:
                direct_n = 2_000 if quick else 6_000
                results.direct_runner_drain = _drain_phase(
                    client, direct_n, ["--runner=BundleBasedDirectRunner"], "direct"
                )
    results.summary = _summary(results, best_ceiling)
    (output / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    if results.steps:
        _plot(results, output)
    print(f"bench: summary {json.dumps(results.summary)}")
    print(f"bench: wrote {output / 'results.json'}")
    return 0


def _summary(results: Results, best_ceiling: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"ceiling_rate": best_ceiling}
    lost = 0
    for name in CONFIGS:
        if name not in results.steps and name not in results.pipeline_drain:
            continue  # not run
        steps = results.steps.get(name, [])
        sustained = max((s.ingest_rate for s in steps if s.sustained), default=0.0)
        drain = results.pipeline_drain.get(name, {})
        lost += drain.get("lost", 0) + sum(s.published - s.rows for s in steps)
        summary[name] = {
            "sustained_rate": sustained,
            "drain_rate": drain.get("drain_rate", 0.0),
            "peak_rss_mib": drain.get("peak_rss_mib", 0.0),
            "ratio_sustained_to_ceiling": round(sustained / best_ceiling, 3)
            if best_ceiling
            else None,
            "ratio_drain_to_ceiling": round(drain.get("drain_rate", 0.0) / best_ceiling, 3)
            if best_ceiling
            else None,
            "latency_at_best_sustained": next(
                (
                    {"p50": s.latency_p50, "p95": s.latency_p95, "p99": s.latency_p99}
                    for s in sorted(steps, key=lambda s: -s.offered_rate)
                    if s.sustained
                ),
                None,
            ),
        }
    summary["direct_runner_drain_rate"] = results.direct_runner_drain.get("drain_rate", 0.0)
    summary["lost"] = lost
    return summary
