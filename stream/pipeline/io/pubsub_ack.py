"""The pull source's acknowledgement: ack ids of stored messages, acknowledged per bundle."""

import logging

import apache_beam as beam
from google.cloud import pubsub_v1

from stream.pipeline import metrics
from stream.pipeline.io import clients, leases
from stream.pipeline.io.pubsub_calls import (
    PUBSUB_CALL_ERRORS,
    REFUSED_PUBSUB_ERRORS,
    SUBSCRIBER_ROLE,
    ack_id_chunks,
    pubsub_retry,
    refused_by_pubsub,
)

ACK_TIMEOUT_SECONDS = 30.0  # retries of transient errors included
_LOG = logging.getLogger(__name__)


class AcknowledgeFn(beam.DoFn):
    """Acknowledges messages whose row or dead letter is stored, in batches per bundle.

    Transient Pub/Sub errors are retried with backoff (up to ACK_TIMEOUT_SECONDS). An ack that
    still fails is counted and the messages are given back (ack deadline 0): redelivered and
    rewritten identically (rows are idempotent), so nothing is lost. A refusal (no such
    subscription, no permission) fails the bundle with what to change: the job stops.
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
        for chunk in ack_id_chunks(ack_ids):
            try:
                self._subscriber.acknowledge(
                    request={"subscription": self._subscription, "ack_ids": list(chunk)},
                    retry=pubsub_retry(ACK_TIMEOUT_SECONDS),
                    timeout=ACK_TIMEOUT_SECONDS,
                )
            except REFUSED_PUBSUB_ERRORS as exc:
                self._failed.inc(len(chunk))
                self._leases.release(ack_ids=chunk)  # best effort: given back, not acked
                raise refused_by_pubsub(
                    exc, "acknowledge on", self._subscription, SUBSCRIBER_ROLE
                ) from exc
            except PUBSUB_CALL_ERRORS as exc:
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
