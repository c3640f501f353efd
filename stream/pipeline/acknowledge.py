"""Acknowledgement: a message is acked only once its row is written or its dead letter stored.

`Acknowledge` takes each stored branch (rows written, dead letters published), extracts the
ack ids the pull source attached and hands them to the source's own acknowledge transform:
`AcknowledgeFn` for the pull source, nothing for sources that acknowledged on read.
"""

import logging
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations
from google.cloud import pubsub_v1

from stream.pipeline import metrics
from stream.pipeline.io import clients
from stream.pipeline.messages import DeadLetter, Written

ACK_CHUNK = 1000  # ack ids per Acknowledge request
_LOG = logging.getLogger(__name__)


def ack_id_of(stored: Written | DeadLetter) -> Iterator[str]:
    """The ack id a stored message carries, if its source acknowledges after the write."""
    if stored.raw.ack_id is not None:
        yield stored.raw.ack_id


def _already_acknowledged(ack_id: str) -> str:
    return ack_id


def no_acknowledgement() -> beam.PTransform:
    """The acknowledge transform of a source with nothing to acknowledge (files, acked on read)."""
    return beam.Map(_already_acknowledged)


class Acknowledge(beam.PTransform):
    """Acknowledge every stored message (row written or dead letter published), per branch.

    Per branch rather than after a Flatten: Prism runs a Flatten in the runner, which would
    break the read -> write -> ack fusion (stream/DESIGN.md, "One fused stage").
    """

    def __init__(self, acknowledge: Callable[[], beam.PTransform]) -> None:
        """`acknowledge`: the source's transform, PCollection[ack id] -> acknowledged."""
        super().__init__()
        self._acknowledge = acknowledge

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {
            name: (
                pcoll
                | f"{name}/AckIds" >> beam.FlatMap(ack_id_of)
                | f"{name}/Ack" >> self._acknowledge()
            )
            for name, pcoll in branches.items()
        }


class AcknowledgeFn(beam.DoFn):
    """Acknowledges messages whose row or dead letter is stored, in batches per bundle.

    A failed ack is counted and logged, not raised: the message will be redelivered and
    rewritten identically (rows are idempotent), so nothing is lost.
    """

    _subscriber: pubsub_v1.SubscriberClient  # from setup(): shared per process

    def __init__(self, subscription: str) -> None:
        self._subscription = subscription
        self._ack_ids: list[str] = []
        self._acked = metrics.counter(metrics.ACKED)
        self._failed = metrics.counter(metrics.ACK_FAILED)

    def setup(self) -> None:
        self._subscriber = clients.subscriber()

    def start_bundle(self) -> None:
        self._ack_ids = []

    def process(self, ack_id: str) -> None:
        self._ack_ids.append(ack_id)

    def finish_bundle(self) -> None:
        ack_ids, self._ack_ids = self._ack_ids, []
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[start : start + ACK_CHUNK]
            try:
                self._subscriber.acknowledge(
                    request={"subscription": self._subscription, "ack_ids": chunk}, timeout=30
                )
                self._acked.inc(len(chunk))
            except Exception as exc:
                self._failed.inc(len(chunk))
                _LOG.warning(
                    "acknowledge of %d messages failed (they will be redelivered and "
                    "rewritten idempotently): %s",
                    len(chunk),
                    exc,
                )
