"""`make demo`: fresh emulators, the pipeline, a mixed load, a verify; exit code = verify's."""

import json
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.report import Progress
from loadgen.traffic import TrafficGenerator, TrafficOptions
from loadgen.verify import Targets, verify
from schemas.registry import EVENT_TABLES
from stream import config as cfg
from stream import local
from stream.emulators import Emulators
from stream.options import to_config

RUN_DIR = Path(".run")


def _echo_status(pipeline: PipelineProcess, stop: threading.Event) -> None:
    """Show the pipeline's own status lines while the demo runs."""
    while not stop.wait(1.0):
        for line in pipeline.new_lines("status:"):
            print(f"  pipeline | {line.split('status: ', 1)[-1]}", flush=True)


def _where_to_look(env: Emulators, kept: bool) -> None:
    exports = " ".join(f"{e.env_var}={e.address}" for e in env.started)
    table = cfg.LOCAL_INSTANCE
    print("\nwhere to look:")
    if not kept:
        print("  (the emulators are stopped now; `make demo ARGS=--keep` leaves them up)")
    print(f"  {exports} cbt -project {cfg.LOCAL_PROJECT} -instance {table} count scale-traffic")
    print(
        f"  {exports} cbt -project {cfg.LOCAL_PROJECT} -instance {table} read scale-traffic count=3"
    )
    print(f"  {exports} cbt -project {cfg.LOCAL_PROJECT} -instance {table} read telemetry count=3")
    print("  .run/demo-pipeline.log has the pipeline's log; .run/demo-*.sqlite the ledger")


def run_demo(count: int, rate: float, keep: bool) -> int:
    """Run the demo; return verify's exit code (0 only when nothing was lost)."""
    RUN_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    ledger_path = RUN_DIR / f"demo-{stamp}.sqlite"
    with ExitStack() as stack:
        env = Emulators(log_dir=RUN_DIR, reuse_env=False)
        env.__enter__()
        if not keep:
            stack.callback(env.stop)
        for emulator in env.started:
            print(f"demo: {emulator.name} emulator at {emulator.address}", flush=True)
        config = to_config(PipelineOptions(["--streaming"]))
        local.provision(config)
        pipeline = PipelineProcess(
            ["--streaming", "--status_interval_seconds=3"], RUN_DIR / "demo-pipeline.log"
        )
        stack.callback(pipeline.stop)
        stop_echo = threading.Event()
        echo = threading.Thread(target=_echo_status, args=(pipeline, stop_echo), daemon=True)
        echo.start()
        stack.callback(stop_echo.set)

        traffic = TrafficOptions(
            seed=int(time.time()), invalid_ratio=0.05, duplicate_ratio=0.02, late_ratio=0.1
        )
        print(f"demo: publishing {count} mixed messages at {rate:.0f}/s", flush=True)
        with Ledger(ledger_path) as ledger:
            progress = Progress(rate, count, None)
            topic = cfg.topic_path(cfg.LOCAL_PROJECT, cfg.LOCAL_TOPIC)
            stats = Publisher(topic, ledger, rate).run(
                iter(TrafficGenerator(traffic)), progress, count=count
            )
            progress.finish(stats)
            targets = Targets(
                project=cfg.LOCAL_PROJECT,
                instance=cfg.LOCAL_INSTANCE,
                tables={group: spec.default_table_id for group, spec in EVENT_TABLES.items()},
                dead_letter_subscription=cfg.subscription_path(
                    cfg.LOCAL_PROJECT, cfg.LOCAL_DEAD_LETTER_SUBSCRIPTION
                ),
            )
            verdict = verify(ledger, targets, timeout=120)
        if not pipeline.alive():
            print(f"demo: the pipeline exited early; see {pipeline.log_path}")
        for example in verdict.examples:
            print(f"  {example}")
        if keep:
            state = {e.env_var: {"address": e.address, "pid": e.process.pid} for e in env.started}
            local.STATE_FILE.write_text(json.dumps(state, indent=2))
        _where_to_look(env, keep)
        print(verdict.line(), flush=True)
        return 0 if verdict.ok else 1
    return 1  # unreachable: ExitStack does not swallow exceptions
