"""Sizing on Dataflow, on paper: workers and Bigtable nodes from the CPU measured here.

A model, with its assumptions stated, not a measurement of Dataflow:
- the SDK harness work per message is what this machine's SDK workers (the rows' and the
  rollups' processes) spent at saturation (the pull and ack they do here stand in for
  Dataflow's native read and commit work);
  Prism's own CPU is replaced by Streaming Engine, off the workers;
- Dataflow runs one Python SDK process per vCPU, so every vCPU of a worker does this work;
  workers are sized for 65% CPU, the headroom its autoscaler keeps;
- Bigtable: Google documents about 14,000 rows/s of writes per SSD node (1 KB rows; ours
  are ~0.5 KB), sized for 70% CPU; one row per message, rollup rows are few (per key and
  window and bundle) and left out;
- rollup state in Streaming Engine: bytes per event (measured) x events inside the window
  and the allowed lateness.
"""

import math
from typing import Any

RATES = (1_000, 15_000, 100_000)
MACHINES = {"n2-standard-2": 2, "n2-standard-4": 4}
WORKER_UTILISATION = 0.65
NODE_ROWS_PER_SECOND = 14_000
NODE_UTILISATION = 0.70


def sizing(
    harness_us: dict[str, float],
    state_bytes_per_event: float,
    window_seconds: int = 60,
    lateness_seconds: int = 3600,
) -> list[dict[str, Any]]:
    """Rows of the model: per rate and config, workers per machine type, nodes, state."""
    table = []
    for rate in RATES:
        nodes = math.ceil(rate / (NODE_ROWS_PER_SECOND * NODE_UTILISATION))
        for config, micros in harness_us.items():
            cores = rate * micros / 1e6
            row: dict[str, Any] = {
                "rate": rate,
                "config": config,
                "harness_us_per_message": micros,
                "cores": round(cores, 1),
                "bigtable_nodes": nodes,
            }
            for machine, vcpus in MACHINES.items():
                row[machine] = max(1, math.ceil(cores / (vcpus * WORKER_UTILISATION)))
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
        lines.append(
            f"| {row['rate']:,} | {row['config']} | {row['harness_us_per_message']:.0f} | "
            f"{row['cores']} | {row['n2-standard-2']} | {row['n2-standard-4']} | "
            f"{row['bigtable_nodes']} | {state} |"
        )
    return "\n".join(lines)
