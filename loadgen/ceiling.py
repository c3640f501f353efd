"""The raw-client ceiling: pull -> the same validation and batch writer -> ack, with no Beam.

This is the physical limit of this machine + emulators for Python; the benchmark reports the
pipeline as a fraction of it.
"""

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient

from stream.pipeline.config import IngestConfig
from stream.pipeline.io.batch_writer import BatchWriter
from stream.pipeline.messages import RawMessage, ValidEvent
from stream.pipeline.validate import validate


@dataclass(frozen=True, slots=True)
class CeilingResult:
    """Messages processed, seconds taken, threads used."""

    messages: int
    seconds: float
    threads: int

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0


def _loop(config: IngestConfig, target: int, done: list[int], lock: threading.Lock) -> None:
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
                retry=bigtable.retry,
            )
            for group, table_id in bigtable.tables.items()
        }
        while True:
            with lock:
                if done[0] >= target:
                    return
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
            with lock:
                done[0] += len(received)


def drain(config: IngestConfig, messages: int, threads: int = 1) -> CeilingResult:
    """Process `messages` already waiting in the subscription with `threads` raw loops."""
    done = [0]
    lock = threading.Lock()
    workers = [
        threading.Thread(target=_loop, args=(config, messages, done, lock), daemon=True)
        for _ in range(threads)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return CeilingResult(messages=done[0], seconds=time.monotonic() - started, threads=threads)
