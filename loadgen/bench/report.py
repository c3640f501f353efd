"""The bench's results: what each phase measured, the summary, bench/results.json and the plot."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.bench import measure


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
    cpu_us_per_message: dict[str, float] = field(default_factory=dict)
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
    half_rate: dict[str, Step] = field(default_factory=dict)  # at half the best sustained rate
    direct_runner_drain: dict[str, Any] = field(default_factory=dict)
    million: dict[str, dict[str, Any]] = field(default_factory=dict)  # per configuration
    rollup_state: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    chaos: dict[str, Any] = field(default_factory=dict)  # the soak (loadgen/chaos/soak.py)
    # per configuration and the raw loop: idle, then each offered rate (loadgen/bench/cost.py)
    cost: dict[str, list[Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)


CONFIGS = {"rollups on": [], "rollups off": ["--rollups=off"]}
# The raw-client loop as a process of its own under the same publisher (steps and cost).
RAW = "raw loop"
# Drained once more for comparison: the rollup stages in the rows' SDK worker (one GIL).
ONE_WORKER = "rollups on, one process"
ONE_WORKER_FLAGS = ["--rollup_worker=thread", "--ingest_processes=1"]


def plot(results: Results, output: Path) -> None:
    """throughput.png: achieved rate and latency against the offered rate, per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = 0.0
    for (name, steps), style in zip(results.steps.items(), ("o-", "s--", "d:"), strict=False):
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


def plot_cost(results: Results, output: Path, before: dict[str, Any] | None) -> None:
    """cost.png: CPU us per message against the offered rate, per config, before and after.

    Saturation (the drain) is the rightmost point of each curve; `before` is a recorded
    curve of older code (bench/cost-before.json), drawn dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 5))
    curves = {name: ("this run", figures) for name, figures in cost_curve(results).items()}
    drains = {name: drain.get("drain_rate") for name, drain in results.pipeline_drain.items()}
    drains[RAW] = next((c["rate"] for c in results.ceiling if _one_loop(c)), None)
    styles = {"rollups on": "tab:blue", "rollups off": "tab:orange", RAW: "tab:grey"}
    for name, (label, figures) in curves.items():
        points = _curve_points(figures, drains.get(name))
        axis.plot(
            *zip(*points, strict=True), "o-", color=styles.get(name), label=f"{name}, {label}"
        )
        if name != RAW and figures.get("saturation"):
            goal = f"{name}: 2 x its saturation cost (the goal)"
            axis.axhline(
                2 * figures["saturation"], color=styles.get(name), ls=":", lw=1, label=goal
            )
    before = before or {}
    for name, figures in before.get("curves", {}).items():
        if name == RAW:
            continue  # the raw loop's code did not change
        points = _curve_points(figures, figures.get("saturation_rate"))
        axis.plot(*zip(*points, strict=True), "x--", color=styles.get(name), alpha=0.6,
                  label=f"{name}, before ({before.get('started', '')[:10]})")  # fmt: skip
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (messages/s); the rightmost point: saturation (drain)")
    axis.set_ylabel("CPU µs per message (pipeline's processes)")
    axis.set_title("Cost per message against the rate")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output / "cost.png", dpi=110)


def _curve_points(figures: dict[str, Any], drain_rate: float | None) -> list[tuple[float, float]]:
    points = [(float(rate), micros) for rate, micros in figures.get("by_rate", {}).items()]
    if drain_rate and figures.get("saturation"):
        points.append((drain_rate, figures["saturation"]))
    return sorted(p for p in points if p[1])


def cost_curve(results: Results) -> dict[str, dict[str, Any]]:
    """Per config: CPU us per message at each offered rate and at saturation, and the ratios.

    Saturation is the drain of the same run (the raw loop's: the ceiling's one thread).
    """
    curve: dict[str, dict[str, Any]] = {}
    for name, points in results.cost.items():
        if name in results.pipeline_drain:
            drained = results.pipeline_drain[name].get("pipeline_cpu_us_per_message", {})
            saturation = drained.get("pipeline total")
        else:
            saturation = next(
                (c.get("cpu_us_per_message") for c in results.ceiling if _one_loop(c)), None
            )
        by_rate = {
            f"{_field(p, 'offered_rate'):g}": _field(p, "cpu_us_per_message").get("total")
            for p in points
            if _field(p, "offered_rate")
        }
        idle: dict[str, float] = next(
            (_field(p, "cores") for p in points if not _field(p, "offered_rate")), {}
        )
        curve[name] = {
            "idle_cores": idle.get("total"),
            "by_rate": by_rate,
            "saturation": saturation,
            "ratio_to_saturation": {
                rate: round(micros / saturation, 2)
                for rate, micros in by_rate.items()
                if saturation and micros
            },
        }
    return curve


def harness_curves(results: Results) -> dict[str, list[tuple[float, float]]]:
    """Per config: (offered rate, SDK workers' us per message), and the drain's (saturation).

    The SDK workers only (the rows' and the rollups' processes): on Dataflow, Streaming
    Engine does Prism's work off the workers (loadgen/bench/sizing.py).
    """
    workers = (measure.PIPELINE, measure.ROLLUP_WORKER)
    curves: dict[str, list[tuple[float, float]]] = {}
    for name in CONFIGS:
        points = [
            (
                _field(p, "offered_rate"),
                sum(_field(p, "cpu_us_per_message").get(w, 0.0) for w in workers),
            )
            for p in results.cost.get(name, [])
            if _field(p, "offered_rate")
        ]
        drain = results.pipeline_drain.get(name, {})
        if drain.get("drain_rate"):
            micros = drain.get("pipeline_cpu_us_per_message", {})
            points.append((drain["drain_rate"], sum(micros.get(w, 0.0) for w in workers)))
        curves[name] = [(rate, micros) for rate, micros in points if micros > 0]
    return curves


def _field(point: Any, name: str) -> Any:
    """A field of a cost point, as a dataclass (this run) or a dict (read back from JSON)."""
    return point[name] if isinstance(point, dict) else getattr(point, name)


def _one_loop(ceiling: dict[str, Any]) -> bool:
    """The ceiling's one thread in one process: the raw loop the steps and cost phases run."""
    return bool(ceiling["threads"] == ceiling.get("processes", 1) == 1)


def summarise(results: Results, best_ceiling: float) -> dict[str, Any]:
    """The headline figures: rates and their ratios to the ceiling, latency, CPU, memory."""
    summary: dict[str, Any] = {"ceiling_rate": best_ceiling}
    raw_steps = results.steps.get(RAW, [])
    raw_sustained = max((s.ingest_rate for s in raw_steps if s.sustained), default=0.0)
    if raw_steps:
        summary["raw_loop_sustained_rate"] = raw_sustained
    lost = sum(s.published - s.rows for s in raw_steps)
    for name in CONFIGS:
        if name not in results.steps and name not in results.pipeline_drain:
            continue  # not run
        steps = results.steps.get(name, [])
        sustained = max((s.ingest_rate for s in steps if s.sustained), default=0.0)
        drain = results.pipeline_drain.get(name, {})
        half = results.half_rate.get(name)
        lost += drain.get("lost", 0) + sum(s.published - s.rows for s in steps)

        def ratio(rate: float) -> float | None:
            return round(rate / best_ceiling, 3) if best_ceiling else None

        summary[name] = {
            "sustained_rate": sustained,
            "drain_rate": drain.get("drain_rate", 0.0),
            "peak_rss_mib": drain.get("peak_rss_mib", 0.0),
            "peak_rss_mib_by_process": drain.get("peak_rss_mib_by_process", {}),
            "ratio_sustained_to_ceiling": ratio(sustained),
            # like with like: the raw loop stepped under the same publisher
            "ratio_sustained_to_raw_loop": (
                round(sustained / raw_sustained, 3) if raw_sustained else None
            ),
            "ratio_drain_to_ceiling": ratio(drain.get("drain_rate", 0.0)),
            "latency_at_best_sustained": next(
                (
                    {"p50": s.latency_p50, "p95": s.latency_p95, "p99": s.latency_p99}
                    for s in sorted(steps, key=lambda s: -s.offered_rate)
                    if s.sustained
                ),
                None,
            ),
            "cpu_us_per_message_at_saturation": drain.get("pipeline_cpu_us_per_message", {}),
            "cpu_us_per_message_at_half_sustained": half.cpu_us_per_message if half else {},
            "half_sustained_rate": half.offered_rate if half else None,
        }
    one = results.pipeline_drain.get(ONE_WORKER)
    own = results.pipeline_drain.get("rollups on")
    if one and own:
        lost += one.get("lost", 0)
        # The default (rollups and a second ingest in the worker process) against all of it
        # in the launching process.
        summary["worker_process"] = {
            "drain_rate_one_process": one["drain_rate"],
            "drain_rate_default": own["drain_rate"],
            "gain": round(own["drain_rate"] / one["drain_rate"], 3) if one["drain_rate"] else None,
            "peak_rss_mib_one_process": one.get("peak_rss_mib", 0.0),
            "peak_rss_mib_default": own.get("peak_rss_mib", 0.0),
        }
    for name, run in results.million.items():
        lost += run.get("lost", 0)
        summary.setdefault(name, {})["million_peak_rss_mib"] = run.get("peak_rss_mib", 0.0)
        summary[name]["million_peak_rss_mib_by_process"] = run.get("peak_rss_mib_by_process", {})
    if results.cost:
        summary["cpu_us_per_message_by_rate"] = cost_curve(results)
    summary["direct_runner_drain_rate"] = results.direct_runner_drain.get("drain_rate", 0.0)
    summary["rollup_state_bytes_per_event"] = {
        name: figures["bytes_per_event"] for name, figures in results.rollup_state.items()
    }
    summary["lost"] = lost
    return summary
