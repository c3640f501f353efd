"""The bench's phases: ceiling, drain, rate steps, DirectRunner, profile; each measured alone."""

import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud.bigtable.data import BigtableDataClient

from loadgen import ceiling
from loadgen.bench import load, measure
from loadgen.bench.profile import profile
from loadgen.bench.report import Results, Step
from loadgen.process import PipelineProcess
from stream.launch.options import to_config

RUN_DIR = Path(".run")
HARNESS = measure.PIPELINE_ROLES  # the pipeline's own processes


def pipeline(flags: list[str], log: Path) -> PipelineProcess:
    """The pipeline CLI, recording ingest times (publish -> row latency)."""
    return PipelineProcess(
        ["--streaming", "--record_ingest_time", "--status_interval_seconds=5", *flags], log
    )


def _harness_micros(
    per_role: dict[str, float], roles: tuple[str, ...] = HARNESS
) -> dict[str, float]:
    """CPU us per message of the pipeline's processes (SDK workers, Prism), and their sum."""
    picked = {part: per_role.get(part, 0.0) for part in roles}
    return {**picked, "pipeline total": round(sum(picked.values()), 1)}


def ceiling_phase(results: Results, quick: bool) -> None:
    """The raw-client loop: pull -> the same validation and writer -> ack (threads, processes)."""
    count = 10_000 if quick else 60_000
    # The Pub/Sub emulator is a JVM: the first drain of a run is slower (measured: 5,263/s
    # first, 7,431/s warm), and the pipeline's drains come after. Warm it up unmeasured.
    topic, flags = load.phase_topic("ceiling-warm-up")
    sent, _ = load.publish(topic, "ceiling-warm-up", 1e9, count, None)
    ceiling.drain(to_config(PipelineOptions(["--streaming", *flags])), sent, 1)
    # Threads share one GIL; the pipeline's default ingests in two processes, so the raw
    # loop does too (the best of the three is the run's ceiling).
    for threads, processes in ((1, 1), (2, 1), (1, 2)):
        phase = f"ceiling{threads}" if processes == 1 else f"ceiling-{processes}-processes"
        topic, flags = load.phase_topic(phase)
        print(f"bench: ceiling, {threads} thread(s) x {processes} process(es), {count} messages")
        sent, _ = load.publish(topic, phase, 1e9, count, None)
        before = _own_and_children_cpu()
        if processes == 1:
            config = to_config(PipelineOptions(["--streaming", *flags]))
            outcome = ceiling.drain(config, sent, threads)
        else:
            outcome = ceiling.drain_processes(flags, sent, processes)
        spent = _own_and_children_cpu() - before
        results.ceiling.append(
            {
                **asdict(outcome),
                "rate": round(outcome.rate, 1),
                # the loops run in this process or its children, which publish nothing meanwhile
                "cpu_us_per_message": round(spent * 1e6 / max(outcome.messages, 1), 1),
            }
        )
        print(f"bench: ceiling {threads} thread(s) x {processes} process(es): {outcome.rate:.0f}/s")


def _own_and_children_cpu() -> float:
    """CPU seconds of this process and of its children that ended (the ceiling's loops)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def drain_phase(
    client: BigtableDataClient, backlog: int, flags: list[str], phase: str
) -> dict[str, Any]:
    """A backlog published before the pipeline starts: drain rate, CPU per message, memory."""
    topic, phase_flags = load.phase_topic(phase)
    print(f"bench: {phase}: publishing a backlog of {backlog} before the pipeline starts")
    sent, _ = load.publish(topic, phase, 1e9, backlog, None)
    run = pipeline([*phase_flags, *flags], RUN_DIR / f"bench-{phase}.log")
    started = time.monotonic()
    cpu_before = measure.cpu_seconds()
    with measure.RssSampler() as rss, measure.CpuTimeline() as cpu:
        hint = load.WrittenHint(run)
        rows = load.wait_rows(client, phase, sent, max(300.0, backlog / 50), hint)
        elapsed = time.monotonic() - started
    cpu_after = measure.cpu_seconds()
    run.stop()
    ingest = sorted(i for _, i in load.ingest_stamps(client, phase))
    per_role = cpu.per_message(ingest)
    result = {
        "backlog": sent,
        "rows": rows,
        "lost": sent - rows,
        "seconds_from_start": round(elapsed, 1),
        "drain_rate": measure.bulk_rate(ingest),
        **rss.report(),
        "cores_used": measure.cpu_share(cpu_before, cpu_after, elapsed),
        "cpu_us_per_message": per_role,
        "pipeline_cpu_us_per_message": _harness_micros(per_role),
    }
    print(f"bench: {phase}: {json.dumps(result)}")
    return result


def million_phase(
    client: BigtableDataClient, count: int, rate: float, flags: list[str], phase: str
) -> dict[str, Any]:
    """`count` messages through a running pipeline at `rate`: memory with all of it in state.

    The Pub/Sub emulator cannot serve a backlog of a million: with one published before the
    pipeline started, it drained at ~500 msg/s using both cores (measured, see the README),
    so the million arrives at a rate instead. With the default hour of allowed lateness every
    event of the run stays in rollup state: peak RSS is the state of a million events.
    """
    topic, phase_flags = load.phase_topic(phase)
    run = pipeline([*phase_flags, *flags], RUN_DIR / f"bench-{phase}.log")
    hint = load.WrittenHint(run)
    time.sleep(8)  # start-up (Prism, SDK workers) before offering load
    print(f"bench: {phase}: {count} messages at {rate:.0f}/s through the running pipeline")
    started = time.monotonic()
    with measure.RssSampler() as rss:
        sent, took = load.publish(topic, phase, rate, count, None)
        rows = load.wait_rows(client, phase, sent, 600.0, hint)
        elapsed = time.monotonic() - started
    run.stop()
    ingest = sorted(i for _, i in load.ingest_stamps(client, phase))
    result = {
        "messages": sent,
        "rows": rows,
        "lost": sent - rows,
        "offered_rate": rate,
        "publish_rate": round(sent / took, 1),
        "ingest_rate": measure.bulk_rate(ingest),
        "seconds": round(elapsed, 1),
        **rss.report(),
    }
    print(f"bench: {phase}: {json.dumps(result)}")
    return result


def step(
    client: BigtableDataClient,
    topic: str,
    rate: float,
    seconds: float,
    hint: load.WrittenHint,
    roles: tuple[str, ...] = HARNESS,
) -> Step:
    """One offered rate for `seconds`: achieved rate, latency, CPU per message, sustained?"""
    result = Step(offered_rate=rate, seconds=seconds)
    phase = f"s{int(rate)}-{uuid.uuid4().hex[:6]}"
    print(f"bench: step {rate:.0f}/s for {seconds:.0f}s")
    cpu_before = measure.cpu_seconds()
    result.published, took = load.publish(topic, phase, rate, None, seconds)
    cpu_after = measure.cpu_seconds()
    result.cores_used = measure.cpu_share(cpu_before, cpu_after, took)
    result.cpu_us_per_message = _harness_micros(
        measure.micros_per_message(cpu_before, cpu_after, result.published), roles
    )
    result.publish_rate = round(result.published / took, 1)
    stopped = time.time() * 1000
    result.rows = load.wait_rows(client, phase, result.published, seconds + 120, hint)
    stamps = sorted(load.ingest_stamps(client, phase))
    if not stamps:
        result.note = "no rows"
        return result
    latencies = [(i - e) / 1000 for e, i in stamps]
    summary = measure.latency(stamps)
    result.latency_p50, result.latency_p95 = summary["p50"], summary["p95"]
    result.latency_p99, result.latency_max = summary["p99"], summary["max"]
    third = max(1, len(latencies) // 3)
    result.latency_growth = round(
        statistics.median(latencies[-third:]) - statistics.median(latencies[:third]), 3
    )
    ingested = sorted(i for _, i in stamps)
    result.ingest_rate = measure.bulk_rate(ingested)
    # A bounded backlog drains right after publishing stops. One straggler (measured: a
    # single row 9 s late among 60,000 at p99 0.29 s) is a latency outlier, reported as
    # such, not a backlog: "sustained" looks at when 99.9% of the rows had landed.
    result.drain_seconds = round(
        max(0.0, (measure.percentile(ingested, 0.999) - stopped) / 1000), 2
    )
    result.straggler_seconds = round(max(0.0, (max(ingested) - stopped) / 1000), 2)
    publisher_ok = result.publish_rate >= 0.95 * rate
    result.sustained = (
        publisher_ok
        and result.rows == result.published
        and result.latency_growth <= 2.0
        and result.drain_seconds <= 5.0
    )
    if not publisher_ok:
        result.note = "publisher could not offer this rate"
    print(f"bench: step result {json.dumps(asdict(result))}")
    return result


def steps_phase(
    client: BigtableDataClient,
    results: Results,
    name: str,
    start: Callable[[list[str], Path], PipelineProcess],
    rates: list[float],
    seconds: float,
    best_ceiling: float,
    profile_output: Path | None,
    roles: tuple[str, ...] = HARNESS,
) -> None:
    """Rising offered rates until one is not sustained, then half the best sustained rate.

    `start(topic flags, log)` starts what is measured: the pipeline, or the raw loop under
    the same publisher (`roles`: its processes). The half-rate step gives the CPU per
    message below saturation; with `profile_output`, a py-spy profile is taken during one
    more step at the best sustained rate.
    """
    tag = f"steps-{name.replace(' ', '-')}"
    topic, phase_flags = load.phase_topic(tag)
    run = start(phase_flags, RUN_DIR / f"bench-{tag}.log")
    hint = load.WrittenHint(run)
    time.sleep(8)  # start-up (Prism, SDK harness) before offering load
    steps = []
    for rate in rates:
        steps.append(step(client, topic, rate, seconds, hint, roles))
        if not steps[-1].sustained or rate > 1.2 * best_ceiling:
            break
    results.steps[name] = steps
    best = max((s.offered_rate for s in steps if s.sustained), default=rates[0])
    results.half_rate[name] = step(client, topic, best / 2, seconds, hint, roles)
    if profile_output is not None:
        print(f"bench: profiling the pipeline at {best:.0f}/s")
        profiler = threading.Thread(
            target=lambda pid: results.profile.update(profile(pid, 15, profile_output)),
            args=(run.process.pid,),
            daemon=True,
        )
        profiler.start()
        step(client, topic, best, 20.0, hint)
        profiler.join()
    run.stop()
