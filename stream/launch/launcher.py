"""Parse and validate flags, pick the runner, prepare local resources, build and run."""

import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    SetupOptions,
)
from apache_beam.runners.runner import PipelineState

from schemas.registry import BUILT_IN_PACKAGE, SchemaPluginError, registry
from stream.launch import patches
from stream.launch.checks import ResourceError, check_subscription, check_tables
from stream.launch.options import DATAFLOW, PRISM, ConfigError, to_config, uses_emulators
from stream.launch.prism import PrismServer, PrismStartError
from stream.launch.runners import RunnerChoice, choose_runner
from stream.launch.status import StatusPrinter
from stream.local import environment as local
from stream.local.emulators import EmulatorError
from stream.pipeline.build import Source, build_pipeline
from stream.pipeline.config import IngestConfig, RollupWorker
from stream.pipeline.io import leases
from stream.pipeline.io.files import FileSource
from stream.pipeline.io.pubsub_native import NativeSource
from stream.pipeline.io.pubsub_pull import PullSource
from stream.pipeline.io.sink import BigtableSink
from stream.pipeline.refused import refusal_in

_LOG = logging.getLogger("stream")


def source_for(choice: RunnerChoice, config: IngestConfig) -> Source:
    """Where messages come from.

    Files for a backfill; else Beam's native ReadFromPubSub where the runner implements it
    (Dataflow, the DirectRunner); else the pull source, which acks after the write.
    """
    if config.input_pattern is not None:
        return FileSource(config.input_pattern, config.rules.schema_attribute, config.input_schema)
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
    if not choice.native_pubsub and config.input_pattern is None:
        check_subscription(config)


class _Stop:
    """Turns the first SIGINT/SIGTERM into a clean cancel; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class _Finish:
    """wait_until_finish() in a thread: the only way every runner reports a failure.

    The DirectRunner's `state` stays RUNNING after a bundle exhausted its retries; the
    failure surfaces only as an exception from wait_until_finish().
    """

    def __init__(self, result: beam.runners.runner.PipelineResult) -> None:
        self.state: str | None = None
        self.refusal: str | None = None  # the failure was refused for good: no restart
        # Set before cancel(): what wait_until_finish() raises then is the teardown of the
        # job service (Prism's is destroyed on cancel), not a failure of the job.
        self.cancelling = False
        self._thread = threading.Thread(target=self._wait, args=(result,), daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for wait_until_finish() to return (after a cancel)."""
        self._thread.join(timeout)

    def _wait(self, result: beam.runners.runner.PipelineResult) -> None:
        try:
            self.state = str(result.wait_until_finish() or result.state)
        except Exception as exc:  # any exception here means the job ended abnormally
            if self.cancelling:
                self.state = str(PipelineState.CANCELLED)
                return
            _LOG.exception("pipeline failed")
            self.refusal = refusal_in(str(exc))
            self.state = str(PipelineState.FAILED)


def _wait(
    result: beam.runners.runner.PipelineResult, config: IngestConfig, stop: _Stop
) -> tuple[str, str | None]:
    """The job's final state, and the refusal that ended it if one did."""
    status = StatusPrinter(result, config.status_interval.total_seconds(), _LOG.info)
    finish = _Finish(result)
    while True:
        if finish.state is not None:
            return finish.state, finish.refusal
        if stop.requested:
            _LOG.info("stopping: cancelling the pipeline (what it holds unstored is given back)")
            finish.cancelling = True
            result.cancel()
            finish.join(timeout=30)
            return str(PipelineState.CANCELLED), None
        status.tick()
        time.sleep(0.5)


class Restarts:
    """When a failed local run may be restarted: at most `limit` times in a row.

    A run that stayed up for `healthy` resets the count. Prism does not retry failed
    bundles (a bundle error fails the job) and the DirectRunner gives up after 4 attempts;
    restarting is safe because unacknowledged messages are redelivered and rewritten
    identically. Delays double from 2 s up to 60 s. Transient Bigtable errors do not get
    here: the writers back off in place (--write_retry_seconds).
    """

    def __init__(self, limit: int, healthy: float = 600.0) -> None:
        self.limit = limit
        self.healthy = healthy
        self.count = 0

    def next_delay(self, ran_for: float) -> float | None:
        """Seconds to wait before the next run, or None when no restart is allowed."""
        if ran_for >= self.healthy:
            self.count = 0
        if self.count >= self.limit:
            return None
        self.count += 1
        return float(min(60, 2**self.count))


def _build(options: PipelineOptions, config: IngestConfig, choice: RunnerChoice) -> beam.Pipeline:
    pipeline = beam.Pipeline(options=options)
    second = PullSource(config.pubsub, leads=False) if config.ingest_processes > 1 else None
    build_pipeline(
        pipeline,
        source_for(choice, config),
        BigtableSink(config.bigtable, config.pubsub.dead_letter_topic),
        config,
        second,
    )
    return pipeline


def _release_held_messages() -> int:
    """Give back what the ended job pulled but did not store: redelivered now, not later.

    Prism runs the SDK harness in this process (LOOPBACK), so its lease keepers are this
    process's; the pull DoFns also release their own when a failed bundle tears them down.
    """
    released = leases.release_all()
    if released:
        _LOG.info(
            "released %d messages the job held but had not stored (ack deadline 0): "
            "they are redelivered at once",
            released,
        )
    return released


def _prism_server(options: PipelineOptions, choice: RunnerChoice) -> PrismServer | None:
    """The launcher's own Prism, unless the runner is not Prism or a --job_endpoint was given."""
    portable = options.view_as(PortableOptions)
    location = options.view_as(PrismRunnerOptions).prism_location
    if choice.name != PRISM or portable.job_endpoint or not location:
        return None
    return PrismServer(Path(location))


def _run_locally(
    options: PipelineOptions, config: IngestConfig, choice: RunnerChoice, stack: ExitStack
) -> int:
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts = Restarts(config.max_restarts)
    prism = _prism_server(options, choice)
    if prism is not None:
        stack.callback(prism.stop)
    while True:
        started = time.monotonic()
        leases.reopen_all()  # after a failed run: hold what this one pulls
        if prism is not None:  # a Prism that died (killed, crashed) is started again
            options.view_as(PortableOptions).job_endpoint = prism.endpoint()
        result = _build(options, config, choice).run()
        # Beam's job servers may install their own SIGINT handler during run(): ours goes
        # first again, so the first Ctrl-C cancels cleanly.
        signal.signal(signal.SIGINT, stop)
        state, refusal = _wait(result, config, stop)
        _LOG.info("pipeline finished: %s", state)
        _release_held_messages()
        if state != str(PipelineState.FAILED) or stop.requested:
            return 0 if state in (PipelineState.DONE, PipelineState.CANCELLED) else 1
        if refusal is not None:
            _LOG.error("stopped, not restarting (no restart can fix this): %s", refusal)
            return 1
        delay = restarts.next_delay(time.monotonic() - started)
        if delay is None:
            _LOG.error("pipeline failed %d times in a row; giving up", restarts.count + 1)
            return 1
        _LOG.error(
            "pipeline failed; restarting in %.0fs (restart %d of at most %d). Messages it had "
            "not acknowledged were given back and are rewritten identically.",
            delay,
            restarts.count,
            restarts.limit,
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop.requested:
            time.sleep(0.2)
        if stop.requested:
            return 1


def patches_for(config: IngestConfig, choice: RunnerChoice) -> tuple[patches.Patch, ...]:
    """The patches this run needs (none with --patches=off)."""
    if not config.patches:
        return ()
    needed = [patches.RAW_MUTATION_ENTRIES]
    if choice.name != DATAFLOW:
        needed.append(patches.FRESH_METRICS)
    if choice.name == PRISM:
        needed.append(patches.SAMPLER_WITHOUT_THREAD)
    if config.rollup_worker is RollupWorker.PROCESS or config.ingest_processes > 1:
        needed.append(patches.WORKER_PROCESS)
    return tuple(needed)


def run(argv: list[str]) -> int:
    """Run the ingestion pipeline; return a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:  # before the flags: each plugin's table group adds a --<group>_table flag
        found = registry()
    except SchemaPluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plugins = sorted(f"{n} ({p})" for n, p in found.packages.items() if p != BUILT_IN_PACKAGE)
    if plugins:
        _LOG.info("schema plugins: %s", ", ".join(plugins))
    options = PipelineOptions(argv)
    choice = choose_runner(options)
    try:
        config = to_config(options)
        needed = patches_for(config, choice)
        patches.check(needed)
    except (ConfigError, patches.PatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    patches.apply(needed)
    # The code is a package installed on the workers (the flex-template image); nothing
    # lives in __main__, so do not pickle it (Beam turns this on by default for Dataflow).
    options.view_as(SetupOptions).save_main_session = False
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
        if choice.name == DATAFLOW:
            result = _build(options, config, choice).run()
            _LOG.info("submitted to Dataflow: %s", getattr(result, "job_id", lambda: "")())
            return 0
        try:
            return _run_locally(options, config, choice, stack)
        except PrismStartError as exc:
            _LOG.error("%s", exc)
            return 1
