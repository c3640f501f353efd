"""Acknowledgement: a message is acked only once its row is written or its dead letter stored.

`Acknowledge` takes each stored branch (rows written, dead letters published), extracts the
ack ids the pull source attached and hands them to the source's own acknowledge transform:
`AcknowledgeFn` for the pull source, nothing for sources that acknowledged on read. Until
it is acknowledged, a pulled message's lease is kept by `stream.pipeline.leases` (extended
while it is worked on, given back at once when its bundle or job fails).
"""

import logging
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations
from google.cloud import pubsub_v1

from stream.pipeline import leases, metrics
from stream.pipeline.io import clients
from stream.pipeline.messages import DeadLetter, Written

ACK_CHUNK = 1000  # ack ids per Acknowledge request
ACK_TIMEOUT_SECONDS = 30.0  # retries of transient errors included
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

    Transient Pub/Sub errors are retried with backoff (api-core's Retry, up to
    ACK_TIMEOUT_SECONDS). An ack that still fails is counted and logged, not raised, and the
    message is given back (ack deadline 0): it is redelivered and rewritten identically (rows
    are idempotent), so nothing is lost.
    """

    _subscriber: pubsub_v1.SubscriberClient  # from setup(): shared per process
    _leases: leases.LeaseKeeper  # from setup(): shared with the pull source

    def __init__(self, subscription: str) -> None:
        self._subscription = subscription
        self._ack_ids: list[str] = []
        self._acked = metrics.counter(metrics.ACKED)
        self._failed = metrics.counter(metrics.ACK_FAILED)

    def setup(self) -> None:
        self._subscriber = clients.subscriber()
        self._leases = leases.keeper(self._subscription)

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
                    request={"subscription": self._subscription, "ack_ids": chunk},
                    retry=leases.pubsub_retry(ACK_TIMEOUT_SECONDS),
                    timeout=ACK_TIMEOUT_SECONDS,
                )
            except Exception as exc:
                self._failed.inc(len(chunk))
                _LOG.warning(
                    "acknowledge of %d messages failed (they will be redelivered and "
                    "rewritten idempotently): %s",
                    len(chunk),
                    exc,
                )
                self._leases.release(ack_ids=chunk)
                continue
            self._leases.done(chunk)
            self._acked.inc(len(chunk))
