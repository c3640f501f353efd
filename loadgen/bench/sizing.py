"""Sizing on Dataflow, on paper: workers and Bigtable nodes from the CPU measured here.

A model, with its assumptions stated, not a measurement of Dataflow:
- the SDK harness work per message is what this machine's SDK workers (the rows' and the
  rollups' processes) spent at the rate each process sees: the cost curve measured here
  (100, 300, 1,000/s, half the sustained rate, saturation), log-linear between its points,
  flat beyond them (below 100/s per process that is optimistic). The pull and ack they do
  here stand in for Dataflow's native read and commit work; Prism's own CPU is replaced by
  Streaming Engine, off the workers;
- Dataflow runs one Python SDK process per vCPU, so every vCPU of a worker does this work;
  workers are sized for 65% CPU, the headroom its autoscaler keeps;
- Bigtable: Google documents about 14,000 rows/s of writes per SSD node (1 KB rows; ours
  are ~0.5 KB), sized for 70% CPU; one row per message, rollup rows are few (per key and
  window and bundle) and left out;
- rollup state in Streaming Engine: bytes per event (measured) x events inside the window
  and the allowed lateness.
"""

import itertools
import math
from typing import Any

RATES = (1_000, 15_000, 100_000)
MACHINES = {"n2-standard-2": 2, "n2-standard-4": 4}
WORKER_UTILISATION = 0.65
NODE_ROWS_PER_SECOND = 14_000
NODE_UTILISATION = 0.70


Curve = list[tuple[float, float]]  # (messages per second per process, harness us/message)


def cost_at(curve: Curve, rate: float) -> float:
    """Harness us per message at `rate` per process: log-linear between the curve's points."""
    points = sorted(curve)
    if rate <= points[0][0]:
        return points[0][1]
    for (low, low_us), (high, high_us) in itertools.pairwise(points):
        if rate <= high:
            share = math.log(rate / low) / math.log(high / low)
            return float(low_us * (high_us / low_us) ** share)
    return points[-1][1]


def workers_for(curve: Curve, rate: float, vcpus: int) -> tuple[int, float] | None:
    """The fewest workers of `vcpus` whose every vCPU stays below WORKER_UTILISATION.

    Each vCPU's share of the traffic costs what the curve says at that share's rate, so more
    workers are not always enough: None when no number of workers is (a process busy
    whatever its rate, as when every message paid for its own bundle).
    """
    for workers in range(1, max(1, math.ceil(rate / vcpus)) + 1):
        share = rate / (workers * vcpus)
        micros = cost_at(curve, share)
        if share * micros / 1e6 <= WORKER_UTILISATION:
            return workers, micros
    return None


def sizing(
    harness_curves: dict[str, Curve],
    state_bytes_per_event: float,
    window_seconds: int = 60,
    lateness_seconds: int = 3600,
) -> list[dict[str, Any]]:
    """Rows of the model: per rate and config, workers per machine type, nodes, state."""
    table = []
    for rate in RATES:
        nodes = math.ceil(rate / (NODE_ROWS_PER_SECOND * NODE_UTILISATION))
        for config, curve in harness_curves.items():
            if not curve:
                continue
            small = workers_for(curve, rate, MACHINES["n2-standard-2"])
            micros = small[1] if small else None
            row: dict[str, Any] = {
                "rate": rate,
                "config": config,
                # at the n2-standard-2 sizing's per-vCPU rate
                "harness_us_per_message": round(micros, 1) if micros else None,
                "cores": round(rate * micros / 1e6, 1) if micros else None,
                "bigtable_nodes": nodes,
            }
            for machine, vcpus in MACHINES.items():
                sized = workers_for(curve, rate, vcpus)
                row[machine] = sized[0] if sized else None
            state = 0.0
            if config == "rollups on":
                state = rate * (window_seconds + lateness_seconds) * state_bytes_per_event
            row["rollup_state_gib"] = round(state / 2**30, 2)
            table.append(row)
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The model as the README's table."""
    lines = [
        "| msg/s | config | harness µs/msg | cores | n2-standard-2 workers | "
        "n2-standard-4 workers | Bigtable SSD nodes | rollup state |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        state = f"{row['rollup_state_gib']} GiB" if row["rollup_state_gib"] else "-"
        micros = row["harness_us_per_message"]
        lines.append(
            f"| {row['rate']:,} | {row['config']} | {f'{micros:.0f}' if micros else '-'} | "
            f"{row['cores'] or '-'} | {row['n2-standard-2'] or 'none enough'} | "
            f"{row['n2-standard-4'] or 'none enough'} | {row['bigtable_nodes']} | {state} |"
        )
    return "\n".join(lines)
