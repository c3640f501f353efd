"""`python -m loadgen bench`: every phase on fresh emulators, then results.json and the plot.

Phases (fresh emulators on free ports; each phase writes rows under its own key prefix):
1. ceiling: drain a backlog with the raw loop (1 and 2 threads, and 2 processes);
2. drain: a backlog published before the pipeline starts; drain rate, CPU per message at
   saturation, and peak RSS of the pipeline's processes and of each emulator; rollups on
   once more with the rollup stages in the rows' SDK worker (--rollup_worker=thread);
3. million: a million messages at 3,000/s through the running pipeline (the emulator cannot
   serve a backlog of a million): rows, peak RSS per process with all of it in state;
4. steps: offered rates in steps; per step the achieved ingest rate and publish -> row
   latency from the rows' `ingested_at` cells, CPU per message; then half the best
   sustained rate;
5. profile: py-spy of the pipeline during a sustained step;
   cost: CPU per message at 100, 300, 1,000/s and half the sustained rate, rollups on and
   off, beside the raw loop's at the same rates; publish -> row and rollup latency
   (loadgen/bench/cost.py);
6. direct: the DirectRunner's drain rate, for comparison;
7. state: rollup state bytes per event;
8. faults: throughput under 5% RESOURCE_EXHAUSTED (as a ratio of the same run without)
   and the recovery after a 120 s outage, ledger-exact (loadgen/bench/faults.py);
9. chaos: a 20-minute soak of seeded faults and kills (loadgen/chaos/soak.py; 2 minutes
   with --quick). `--phases chaos` alone updates only that key of an existing results.json.
Nothing here asserts timings.
"""

import json
import os
import platform
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import psutil
from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud.bigtable.data import BigtableDataClient

from loadgen.bench import cost, measure, phases
from loadgen.bench.faults import run_fault_phase
from loadgen.bench.report import (
    CONFIGS,
    ONE_WORKER,
    ONE_WORKER_FLAGS,
    RAW,
    Results,
    harness_curves,
    plot,
    plot_cost,
    summarise,
)
from loadgen.bench.sizing import markdown, sizing
from loadgen.bench.state_size import measure_state
from loadgen.chaos.soak import Soak
from loadgen.process import PipelineProcess
from stream import names
from stream.launch.options import to_config
from stream.local import environment as local
from stream.local.emulators import Emulators

PHASES = (
    "ceiling", "drain", "million", "steps", "profile", "cost", "direct", "state", "faults",
    "chaos",
)  # fmt: skip
CHAOS_SEED = 7
COST_BEFORE = "cost-before.json"  # a recorded cost curve of older code, drawn in cost.png


def _soak(quick: bool) -> dict[str, Any]:
    """The chaos soak on emulators of its own; its report as JSON."""
    report = Soak(2 if quick else 20, CHAOS_SEED, 100.0, phases.RUN_DIR / "chaos").run()
    return {**asdict(report), "ok": report.ok}


def _record_chaos_only(output: Path, quick: bool) -> int:
    """Run the soak alone and write it into the existing results.json (the rest unchanged)."""
    path = output / "results.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded["chaos"] = {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        **_soak(quick),
    }
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"bench: wrote the chaos soak into {path}")
    return 0 if recorded["chaos"]["ok"] else 1


def _starter(flags: list[str]) -> cost.Starter:
    """Starts the pipeline with `flags` after the phase's own (its subscription)."""

    def start(topic_flags: list[str], log: Path) -> PipelineProcess:
        return phases.pipeline([*topic_flags, *flags], log)

    return start


def _cost(
    client: BigtableDataClient, results: Results, chosen: dict[str, list[str]], quick: bool
) -> None:
    """The cost phase per config (at half its sustained rate too), then the raw loop's."""
    base = [100.0, 1000.0] if quick else list(cost.RATES)
    for name, flags in chosen.items():
        half = results.half_rate.get(name)
        drained = results.pipeline_drain.get(name, {}).get("drain_rate", 0.0)
        rate = half.offered_rate if half else round(drained / 2, -1)
        rates = [*base, rate] if rate > base[-1] else base

        tag = f"cost-{name.replace(' ', '-')}"
        rollups = "--rollups=off" not in flags
        results.cost[name] = cost.cost_phase(
            client, tag, _starter(flags), rates, phases.HARNESS, rollups, phases.RUN_DIR
        )
    results.cost[RAW] = cost.cost_phase(
        client, "cost-raw-loop", cost.raw_loop, base, (measure.RAW_LOOP,), False, phases.RUN_DIR
    )


def run_bench(
    output: Path,
    quick: bool,
    backlog: int,
    phases_to_run: tuple[str, ...] = PHASES,
    configs: tuple[str, ...] = tuple(CONFIGS),
) -> int:
    """Run the phases for the configs; write results.json and throughput.png into `output`."""
    chosen = {name: flags for name, flags in CONFIGS.items() if name in configs}
    output.mkdir(parents=True, exist_ok=True)
    if phases_to_run == ("chaos",):
        return _record_chaos_only(output, quick)
    phases.RUN_DIR.mkdir(exist_ok=True)
    step_seconds = 15.0 if quick else 60.0
    # Full: 1,000/s, then 500/s steps from 2,000/s (below that every config keeps up).
    rates = [500.0, 1000.0, 2000.0] if quick else [1000.0] + [500.0 * n for n in range(4, 17)]
    results = Results(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine={
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "beam": beam.version.__version__,
            "quick": quick,
            "backlog": backlog,
            "phases": list(phases_to_run),
            "configs": list(chosen),
        },
    )
    if "state" in phases_to_run:
        results.rollup_state = measure_state()
    # The Pub/Sub emulator holds a backlog in its JVM heap (~6 KB per message measured);
    # Java's default heap (a quarter of the memory) made it crawl at 1M messages.
    os.environ.setdefault("JAVA_OPTS", f"-Xmx{int(psutil.virtual_memory().total / 2**30 / 2)}g")
    with ExitStack() as stack:
        stack.enter_context(Emulators(log_dir=phases.RUN_DIR, reuse_env=False))
        local.provision(to_config(PipelineOptions(["--streaming"])))
        with BigtableDataClient(project=names.LOCAL_PROJECT) as client:
            if "ceiling" in phases_to_run:
                phases.ceiling_phase(results, quick)
            best_ceiling = max((c["rate"] for c in results.ceiling), default=0.0)
            if "drain" in phases_to_run:
                for name, flags in chosen.items():
                    tag = f"drain-{name.replace(' ', '-')}"
                    results.pipeline_drain[name] = phases.drain_phase(client, backlog, flags, tag)
                if "rollups on" in chosen:
                    results.pipeline_drain[ONE_WORKER] = phases.drain_phase(
                        client, backlog, ONE_WORKER_FLAGS, "drain-rollups-on-one-worker"
                    )
            if "million" in phases_to_run:
                for name, flags in chosen.items():
                    tag = f"million-{name.replace(' ', '-')}"
                    results.million[name] = phases.million_phase(
                        client, 20_000 if quick else 1_000_000, 3000.0, flags, tag
                    )
            if "steps" in phases_to_run:
                for name, flags in chosen.items():
                    profile = (
                        output if "profile" in phases_to_run and name == "rollups on" else None
                    )
                    phases.steps_phase(
                        client, results, name, _starter(flags), rates, step_seconds,
                        best_ceiling or 1e9, profile,
                    )  # fmt: skip
                # The baseline sustained under the same publisher, on the same cores.
                phases.steps_phase(
                    client, results, RAW, cost.raw_loop, rates, step_seconds, 1e9, None,
                    (measure.RAW_LOOP,),
                )  # fmt: skip
            if "cost" in phases_to_run:
                _cost(client, results, chosen, quick)
            if "faults" in phases_to_run:
                if quick:
                    results.faults = run_fault_phase(
                        phases.RUN_DIR, backlog=3000, rate=500, seconds=20, outage_seconds=20
                    )
                else:
                    results.faults = run_fault_phase(phases.RUN_DIR)
            if "direct" in phases_to_run:
                results.direct_runner_drain = phases.drain_phase(
                    client,
                    2_000 if quick else 6_000,
                    ["--runner=BundleBasedDirectRunner"],
                    "direct",
                )
    if "chaos" in phases_to_run:  # emulators of its own, after the others are stopped
        results.chaos = _soak(quick)
    results.summary = summarise(results, best_ceiling)
    harness = harness_curves(results)
    state = next(iter(results.summary["rollup_state_bytes_per_event"].values()), 0.0)
    if any(harness.values()):
        results.summary["sizing_model"] = sizing(harness, state)
        print(markdown(results.summary["sizing_model"]))
    (output / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    if results.steps:
        plot(results, output)
    if results.cost:
        before = output / COST_BEFORE
        plot_cost(results, output, json.loads(before.read_text()) if before.exists() else None)
    print(f"bench: summary {json.dumps(results.summary)}")
    print(f"bench: wrote {output / 'results.json'}")
    return 0
