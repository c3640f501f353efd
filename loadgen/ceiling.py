"""The raw-client loop: pull -> the same validation and batch writer -> ack, with no Beam.

This is the physical limit of this machine + emulators for Python; the benchmark reports the
pipeline as a fraction of it, draining a backlog (`drain`) and, as a process of its own
under the same publisher as the pipeline (`python -m loadgen.ceiling`), at offered rates.
"""

import argparse
import multiprocessing
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event

from apache_beam.options.pipeline_options import PipelineOptions
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient

from stream.launch.options import to_config
from stream.pipeline.config import IngestConfig
from stream.pipeline.io.batch_writer import BatchWriter
from stream.pipeline.messages import RawMessage, ValidEvent
from stream.pipeline.validate import validate

START_TIMEOUT_SECONDS = 120.0  # a spawned process imports Beam and the clients in ~3 s here


@dataclass(frozen=True, slots=True)
class CeilingResult:
    """Messages processed, seconds taken, threads used."""

    messages: int
    seconds: float
    threads: int
    processes: int = 1

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0


class _Count:
    """Messages handled by every loop so far, and whether to stop."""

    def __init__(self, target: int | None) -> None:
        self.done = 0
        self.stopped = threading.Event()
        self._target = target
        self._lock = threading.Lock()

    def add(self, handled: int) -> None:
        with self._lock:
            self.done += handled
            if self._target is not None and self.done >= self._target:
                self.stopped.set()


class _SharedCount:
    """`_Count` across processes: one total in shared memory, one stop event."""

    def __init__(self, done: "Synchronized[int]", target: int, stopped: Event) -> None:
        self._done = done
        self._target = target
        self.stopped = stopped

    def add(self, handled: int) -> None:
        with self._done.get_lock():
            self._done.value += handled
            if self._done.value >= self._target:
                self.stopped.set()


def _loop(
    config: IngestConfig, count: _Count | _SharedCount, record_ingest_time: bool = False
) -> None:
    subscription = config.pubsub.subscription
    with (
        pubsub_v1.SubscriberClient() as subscriber,
        BigtableDataClient(project=config.bigtable.project) as client,
    ):
        bigtable = config.bigtable
        writers = {
            group: BatchWriter[None](
                client.get_table(bigtable.instance, table_id),
                bigtable.batch_rows,
                bigtable.timeout,
                record_ingest_time=record_ingest_time,
                retry=bigtable.retry,
            )
            for group, table_id in bigtable.tables.items()
        }
        while not count.stopped.is_set():
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 1000}, timeout=5
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            received = list(response.received_messages)
            if not received:
                continue
            now = datetime.now(UTC)
            for item in received:
                raw = RawMessage(
                    data=bytes(item.message.data), attributes=dict(item.message.attributes)
                )
                result = validate(raw, config.rules, now)
                if isinstance(result, ValidEvent):
                    writers[result.event.table.group].add(result.event, None)
            for writer in writers.values():
                for _ in writer.flush():
                    pass  # every row's outcome checked, as in the pipeline
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]}
            )
            count.add(len(received))


def drain(config: IngestConfig, messages: int, threads: int = 1) -> CeilingResult:
    """Process `messages` already waiting in the subscription with `threads` raw loops."""
    count = _Count(messages)
    workers = [
        threading.Thread(target=_loop, args=(config, count), daemon=True) for _ in range(threads)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return CeilingResult(messages=count.done, seconds=time.monotonic() - started, threads=threads)


def _process(
    flags: list[str], done: "Synchronized[int]", target: int, ready: Barrier, stopped: Event
) -> None:
    """One process's raw loop, started when every process is ready (imports are not timed)."""
    config = to_config(PipelineOptions(["--streaming", *flags]))
    ready.wait(START_TIMEOUT_SECONDS)
    _loop(config, _SharedCount(done, target, stopped))


def drain_processes(flags: list[str], messages: int, processes: int) -> CeilingResult:
    """`drain` in `processes` processes of one raw loop each (a GIL each, like the pipeline's).

    Timed from all processes ready to the last acknowledged batch.
    """
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Value("q", 0)
    ready, stopped = spawn.Barrier(processes + 1), spawn.Event()
    workers = [
        spawn.Process(target=_process, args=(flags, done, messages, ready, stopped), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait(START_TIMEOUT_SECONDS)
    started = time.monotonic()
    stopped.wait()
    seconds = time.monotonic() - started
    for worker in workers:
        worker.join()  # each ends when its pull in flight returns
    return CeilingResult(done.value, seconds, threads=1, processes=processes)


def main(argv: list[str] | None = None) -> int:
    """One raw loop until SIGINT/SIGTERM, recording ingest times (the bench's stepped loop)."""
    parser = argparse.ArgumentParser(prog="python -m loadgen.ceiling", description=__doc__)
    parser.add_argument("--subscription", required=True)
    args = parser.parse_args(argv)
    config = to_config(PipelineOptions(["--streaming", f"--subscription={args.subscription}"]))
    count = _Count(None)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: count.stopped.set())
    _loop(config, count, record_ingest_time=True)
    print(f"raw loop: {count.done} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
