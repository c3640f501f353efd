"""The benchmark's fault phase: the pipeline behind the fault proxy, overloaded and cut off.

`run_fault_phase` (for `make bench`; needs both emulators running, their addresses in
PUBSUB_EMULATOR_HOST / BIGTABLE_EMULATOR_HOST, and Prism) runs three parts, each on its own
subscription and Bigtable instance, each checked exactly against its ledger:

1. unthrottled: the pipeline through the proxy with no faults: drain rate of a backlog, then
   publish -> row latency at a sustained offered rate;
2. throttled: the same with a share of MutateRows entries answered RESOURCE_EXHAUSTED;
3. outage: a sustained load, and every MutateRows call UNAVAILABLE for `outage_seconds` in
   the middle of it: how long until the first call gets through again, until the first row
   is written, and until the backlog built up meanwhile is drained.

Nothing here asserts timings: it measures. `python -m loadgen.bench.faults` (`make faultload`) runs
it on fresh emulators and prints the result as JSON.
"""

import argparse
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
from google.cloud.bigtable.data import BigtableDataClient

from loadgen.bench import load, measure
from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.report import Progress, PublishStats
from loadgen.resources import PROJECT, LoadTarget, new_target
from loadgen.verify import verify
from stream.local.emulators import Emulators
from tests.faults.proxy import FaultProxy

_THROTTLED = re.compile(r"status: .* throttled=(\d+(?:\.\d+)?)s")
_PEAK = re.compile(r"leases: extended .* peak: (\d+)\)")


def _publish(
    part: LoadTarget,
    ledger: Ledger,
    phase: str,
    rate: float,
    count: int | None,
    seconds: float | None,
) -> PublishStats:
    progress = Progress(rate, count, seconds)
    stats = Publisher(part.topic, ledger, rate).run(load.messages(phase), progress, count, seconds)
    progress.finish(stats)
    return stats


def _stamps(part: LoadTarget, phase: str) -> list[tuple[int, int]]:
    with BigtableDataClient(project=PROJECT) as client:
        return load.ingest_stamps(client, phase, part.targets.instance)


def _wait_rows(part: LoadTarget, phase: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with BigtableDataClient(project=PROJECT) as client:
        while True:
            found = load.phase_rows(client, phase, part.targets.instance)
            if found >= expected or time.monotonic() >= deadline:
                return found
            time.sleep(2.0)


def _log_facts(pipeline: PipelineProcess) -> dict[str, float]:
    log = pipeline.log()
    throttled = [float(v) for v in _THROTTLED.findall(log)]
    peaks = [int(v) for v in _PEAK.findall(log)]
    return {
        "throttled_seconds": throttled[-1] if throttled else 0,
        "restarts": log.count("restarting in"),
        "redelivered_while_held": log.count("pulled again while this process still held them"),
        "peak_held": max(peaks, default=0),
    }


def _pipeline(part: LoadTarget, proxy: FaultProxy, work_dir: Path) -> PipelineProcess:
    log = work_dir / f"faultload-{part.tag}.log"
    return PipelineProcess(part.flags, log, env={"BIGTABLE_EMULATOR_HOST": proxy.address})


def _load_part(
    proxy: FaultProxy,
    tag: str,
    faults: Callable[[FaultProxy], None],
    backlog: int,
    rate: float,
    seconds: float,
    work_dir: Path,
    extra_flags: Sequence[str],
) -> dict[str, Any]:
    """A backlog's drain rate, then latency at a sustained rate, under `faults`."""
    proxy.reset()
    proxy.reset_stats()
    faults(proxy)
    part = new_target(tag, ["--record_ingest_time", *extra_flags])
    ledger_path = work_dir / f"faultload-{tag}.sqlite"
    ledger_path.unlink(missing_ok=True)
    drain_domain, step_domain = f"fault-{tag}-drain", f"fault-{tag}-step"
    with Ledger(ledger_path) as ledger:
        print(f"faultload: {tag}: a backlog of {backlog}, then {rate:.0f}/s for {seconds:.0f}s")
        drained = _publish(part, ledger, drain_domain, 1e9, backlog, None).sent
        pipeline = _pipeline(part, proxy, work_dir)
        try:
            started = time.monotonic()
            _wait_rows(part, drain_domain, drained, timeout=max(300.0, backlog / 20))
            drain_seconds = time.monotonic() - started
            sent = _publish(part, ledger, step_domain, rate, None, seconds).sent
            _wait_rows(part, step_domain, sent, timeout=seconds + 300)
            verdict = verify(ledger, part.targets, timeout=300, progress=False)
            facts = _log_facts(pipeline)
        finally:
            pipeline.stop()
    stats = proxy.stats()
    step = _stamps(part, step_domain)
    result = {
        "backlog": drained,
        "drain_rate": measure.bulk_rate([i for _, i in _stamps(part, drain_domain)]),
        "drain_seconds_from_start": round(drain_seconds, 1),
        "offered_rate": rate,
        "step_published": sent,
        "step_ingest_rate": measure.bulk_rate([i for _, i in step]),
        "latency": measure.latency(step),
        "entries_failed": stats.entries_failed,
        "empty_mutation_entries": stats.empty_mutation_entries,
        **facts,
        "verify": verdict.line(),
        "ok": verdict.ok,
    }
    print(f"faultload: {tag}: {json.dumps(result)}")
    return result


def _outage_part(
    proxy: FaultProxy,
    rate: float,
    before: float,
    outage_seconds: float,
    after: float,
    work_dir: Path,
    extra_flags: Sequence[str],
) -> dict[str, Any]:
    """A sustained load with Bigtable unreachable for `outage_seconds` in its middle."""
    proxy.reset()
    proxy.reset_stats()
    part = new_target("outage", ["--record_ingest_time", *extra_flags])
    domain = "fault-outage"
    ledger_path = work_dir / "faultload-outage.sqlite"
    ledger_path.unlink(missing_ok=True)
    print(f"faultload: outage: {rate:.0f}/s, Bigtable unreachable for {outage_seconds:.0f}s")
    with Ledger(ledger_path) as ledger:
        pipeline = _pipeline(part, proxy, work_dir)
        try:
            while "status:" not in pipeline.log():
                time.sleep(0.5)
            published: list[PublishStats] = []
            total = before + outage_seconds + after
            publisher = threading.Thread(
                target=lambda: published.append(_publish(part, ledger, domain, rate, None, total))
            )
            publisher.start()
            time.sleep(before)
            ends = proxy.outage(outage_seconds)
            publisher.join()
            sent = published[0].sent if published else 0
            _wait_rows(part, domain, sent, timeout=300)
            verdict = verify(ledger, part.targets, timeout=300, progress=False)
            facts = _log_facts(pipeline)
        finally:
            pipeline.stop()
    stats = proxy.stats()
    stamps = _stamps(part, domain)
    end_ms = ends * 1000
    after_outage = [i for _, i in stamps if i >= end_ms]
    held_back = [i for e, i in stamps if e < end_ms and i >= end_ms]
    result = {
        "offered_rate": rate,
        "outage_seconds": outage_seconds,
        "published": sent,
        # the first MutateRows the proxy forwarded again, after the outage ended
        "first_call_through_seconds": round(stats.resumed - ends, 2) if stats.resumed else None,
        "first_row_after_seconds": round((min(after_outage) - end_ms) / 1000, 2)
        if after_outage
        else None,
        # the backlog published until the outage ended is written by then
        "caught_up_seconds": round((max(held_back) - end_ms) / 1000, 2) if held_back else None,
        "outage_calls": stats.outage_calls,
        "latency_after": measure.latency([(e, i) for e, i in stamps if e >= end_ms + 10_000]),
        **facts,
        "verify": verdict.line(),
        "ok": verdict.ok,
    }
    print(f"faultload: outage: {json.dumps(result)}")
    return result


def run_fault_phase(
    work_dir: Path,
    backlog: int = 20_000,
    rate: float = 1000.0,
    seconds: float = 60.0,
    ratio: float = 0.05,
    outage_seconds: float = 120.0,
    outage_rate: float = 500.0,
    extra_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """The fault phase: unthrottled, throttled (`ratio` RESOURCE_EXHAUSTED), an outage.

    Every part is verified against its own ledger.

    Needs the emulators running (their addresses in the environment) and Prism; starts its
    own fault proxy in front of the Bigtable emulator. `extra_flags` go to every pipeline
    (e.g. ["--rollups=off"]). Returns the numbers as a JSON-ready dict; `ok` is True only
    if every part verified with nothing lost, duplicated or unexpected and no job restarted.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED,)
    with FaultProxy(_bigtable_address(), history=0) as proxy:
        base = _load_part(
            proxy, "unthrottled", lambda p: None, backlog, rate, seconds, work_dir, extra_flags
        )
        throttled = _load_part(
            proxy,
            "throttled",
            lambda p: p.fail_entries(ratio, codes=exhausted, seed=1),
            backlog,
            rate,
            seconds,
            work_dir,
            extra_flags,
        )
        outage = _outage_part(proxy, outage_rate, 30.0, outage_seconds, 60.0, work_dir, extra_flags)
    parts = (base, throttled, outage)
    return {
        "resource_exhausted_ratio": ratio,
        "unthrottled": base,
        "throttled": throttled,
        "throughput_ratio": round(throttled["drain_rate"] / base["drain_rate"], 3)
        if base["drain_rate"]
        else None,
        "p99_latency_ratio": round(throttled["latency"]["p99"] / base["latency"]["p99"], 2)
        if base["latency"]["p99"]
        else None,
        "outage": outage,
        "ok": all(p["ok"] and p["restarts"] == 0 for p in parts),
    }


def _bigtable_address() -> str:
    address = os.environ.get("BIGTABLE_EMULATOR_HOST")
    if not address:
        raise RuntimeError("BIGTABLE_EMULATOR_HOST is not set: start the emulators first")
    return address


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fault phase on fresh emulators; print (and write) its result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m loadgen.bench.faults")
    parser.add_argument("--output", type=Path, default=Path(".run/faultload.json"))
    parser.add_argument("--quick", action="store_true", help="small loads, a 20 s outage")
    args = parser.parse_args(argv)
    work_dir = args.output.parent
    with ExitStack() as stack:
        stack.enter_context(Emulators(log_dir=work_dir, reuse_env=False))
        if args.quick:
            result = run_fault_phase(
                work_dir, backlog=3000, rate=500, seconds=20, outage_seconds=20, outage_rate=200
            )
        else:
            result = run_fault_phase(work_dir)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"faultload: {json.dumps(result)}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
