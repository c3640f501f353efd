"""Parse and validate flags, pick the runner, prepare local resources, build and run."""

import logging
import signal
import sys
import time
from contextlib import ExitStack
from types import FrameType

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from stream import local
from stream.config import IngestConfig
from stream.emulators import EmulatorError
from stream.io.pubsub import NativeSource
from stream.io.pubsub_pull import PullSource
from stream.io.sink import BigtableSink
from stream.options import DATAFLOW, ConfigError, to_config, uses_emulators
from stream.pipeline import Source, build_pipeline
from stream.resources import ResourceError, check_subscription, check_tables
from stream.runners import RunnerChoice, choose_runner
from stream.status import StatusPrinter

_LOG = logging.getLogger("stream")
TERMINAL = {PipelineState.DONE, PipelineState.FAILED, PipelineState.CANCELLED}


def source_for(choice: RunnerChoice, config: IngestConfig) -> Source:
    """Native ReadFromPubSub where the runner implements it, else the pull source."""
    if choice.native_pubsub:
        return NativeSource(config.pubsub)
    return PullSource(config.pubsub)


def _prepare(options: PipelineOptions, config: IngestConfig, choice: RunnerChoice) -> None:
    """Fail fast on missing tables or a too-short ack deadline.

    Not on Dataflow: the launching machine may not have read access to the resources.
    """
    if choice.name == DATAFLOW:
        return
    check_tables(config.bigtable)
    if not choice.native_pubsub:
        check_subscription(config)


class _Stop:
    """Turns the first SIGINT/SIGTERM into a clean cancel; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _wait(result: beam.runners.runner.PipelineResult, config: IngestConfig) -> str:
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = StatusPrinter(result, config.status_interval.total_seconds(), _LOG.info)
    while True:
        state = result.state
        if state in TERMINAL:
            return str(state)
        if stop.requested:
            _LOG.info("stopping: cancelling the pipeline (unacknowledged messages stay queued)")
            result.cancel()
            return str(PipelineState.CANCELLED)
        status.tick()
        time.sleep(0.5)


def run(argv: list[str]) -> int:
    """Run the ingestion pipeline; return a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = PipelineOptions(argv)
    try:
        config = to_config(options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    choice = choose_runner(options)
    _LOG.info("runner: %s %s", choice.name, choice.note)
    with ExitStack() as stack:
        try:
            if uses_emulators(options):
                env = local.local_environment(stack, log_dir=None)
                for emulator in env.started:
                    _LOG.info("started %s emulator at %s", emulator.name, emulator.address)
                local.provision(config)
            _prepare(options, config, choice)
        except (EmulatorError, ResourceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        pipeline = beam.Pipeline(options=options)
        build_pipeline(
            pipeline,
            source_for(choice, config),
            BigtableSink(config.bigtable, config.pubsub.dead_letter_topic),
            config,
        )
        result = pipeline.run()
        if choice.name == DATAFLOW:
            _LOG.info("submitted to Dataflow: %s", getattr(result, "job_id", lambda: "")())
            return 0
        state = _wait(result, config)
        _LOG.info("pipeline finished: %s", state)
        return 0 if state in (PipelineState.DONE, PipelineState.CANCELLED) else 1
