"""Pub/Sub I/O: the native read (Dataflow, DirectRunner), dead-letter publishing, acks."""

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.cloud import pubsub_v1

from schemas.base import format_rfc3339_millis
from stream import metrics
from stream.config import PubSubEndpoints
from stream.io import clients
from stream.messages import DeadLetter, RawMessage

ATTRIBUTE_PREFIX = "deadletter_"
MAX_ATTRIBUTES = 100  # Pub/Sub's limit per message
MAX_ATTRIBUTE_VALUE = 1024
ACK_CHUNK = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOG = logging.getLogger(__name__)


def dead_letter_message(letter: DeadLetter) -> tuple[bytes, dict[str, str]]:
    """The dead letter as published: (data, attributes).

    Normally the data is the original bytes, unchanged, and the attributes are the original
    ones plus `deadletter_*` (kind, error, stage, message_id, schema, publish_time); a
    `deadletter_*` attribute the original already had (a dead letter sent again) is replaced
    by the new reason. When the originals leave no room for ours (Pub/Sub allows 100
    attributes), the data becomes a JSON envelope {"data_base64", "attributes"} marked by
    `deadletter_envelope=json`, so nothing is dropped and no attribute exceeds its limit.
    """
    raw = letter.raw
    ours = {
        f"{ATTRIBUTE_PREFIX}kind": str(letter.kind),
        f"{ATTRIBUTE_PREFIX}error": letter.error.encode()[:MAX_ATTRIBUTE_VALUE].decode(
            errors="ignore"
        ),
        f"{ATTRIBUTE_PREFIX}stage": str(letter.stage),
        f"{ATTRIBUTE_PREFIX}message_id": raw.message_id,
        f"{ATTRIBUTE_PREFIX}schema": letter.schema,
    }
    if raw.publish_time is not None:
        ours[f"{ATTRIBUTE_PREFIX}publish_time"] = format_rfc3339_millis(raw.publish_time)
    merged = {**raw.attributes, **ours}
    if len(merged) <= MAX_ATTRIBUTES:
        return raw.data, merged
    envelope = {
        "data_base64": base64.b64encode(raw.data).decode(),
        "attributes": raw.attributes,
    }
    ours[f"{ATTRIBUTE_PREFIX}envelope"] = "json"
    return json.dumps(envelope, sort_keys=True).encode(), ours


def _from_pubsub_message(message: PubsubMessage, element_time: Timestamp | None) -> RawMessage:
    """The RawMessage of a native read's message.

    `element_time` is the element's timestamp, which is the publish time when the read has no
    timestamp attribute: the fallback for a runner that leaves `publish_time` unset.
    """
    publish_time = message.publish_time
    if publish_time is not None and not isinstance(publish_time, datetime):
        publish_time = datetime.fromtimestamp(publish_time.timestamp(), tz=UTC)
    if publish_time is None and element_time is not None:
        publish_time = EPOCH + timedelta(microseconds=element_time.micros)
    return RawMessage(
        data=message.data or b"",
        attributes=dict(message.attributes or {}),
        message_id=message.message_id or "",
        publish_time=publish_time,
        ack_id=None,
    )


class _ToRawMessage(beam.DoFn):
    def __init__(self, timestamp_is_publish_time: bool) -> None:
        self._publish_time_fallback = timestamp_is_publish_time

    @no_annotations
    def process(
        self, message: PubsubMessage, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[RawMessage]:
        yield _from_pubsub_message(message, timestamp if self._publish_time_fallback else None)


class NativeSource:
    """Beam's native ReadFromPubSub, for Dataflow and the DirectRunner.

    Dataflow acknowledges after a durable commit and dedups by message id; the DirectRunner
    acknowledges on read, before processing (see the README's Guarantees).
    """

    acks_after_write = False

    def __init__(self, endpoints: PubSubEndpoints) -> None:
        self._endpoints = endpoints

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage]."""
        endpoints = self._endpoints

        @beam.ptransform_fn
        def _read(pbegin: beam.pvalue.PBegin) -> beam.PCollection:
            return (
                pbegin
                | "ReadFromPubSub"
                >> ReadFromPubSub(
                    subscription=endpoints.subscription,
                    with_attributes=True,
                    id_label=endpoints.id_label,
                    timestamp_attribute=endpoints.timestamp_attribute,
                )
                | "ToRawMessage" >> beam.ParDo(_ToRawMessage(endpoints.timestamp_attribute is None))
            )

        return _read()

    def acknowledge(self) -> beam.PTransform:
        """Nothing to do: the native read acknowledged already."""
        return beam.Map(lambda ack_id: ack_id)


class PublishDeadLettersFn(beam.DoFn):
    """Publishes dead letters; emits each one only after Pub/Sub confirmed it.

    Publishing is batched by the client; the bundle waits for every future in
    finish_bundle. A failed publish raises, so the bundle is retried and the original
    message is never acknowledged without its dead letter being stored.
    """

    _publisher: pubsub_v1.PublisherClient  # from setup(): shared per process

    def __init__(self, topic: str, timeout_seconds: float = 60.0) -> None:
        self._topic = topic
        self._timeout = timeout_seconds
        self._pending: list[tuple[Any, DeadLetter, Timestamp, BoundedWindow]] = []
        self._published = metrics.counter(metrics.DEAD_LETTERED)

    def setup(self) -> None:
        self._publisher = clients.publisher()

    def start_bundle(self) -> None:
        self._pending = []

    @no_annotations
    def process(
        self,
        letter: DeadLetter,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        window: BoundedWindow = beam.DoFn.WindowParam,
    ) -> Iterator[WindowedValue]:
        data, attributes = dead_letter_message(letter)
        future = self._publisher.publish(self._topic, data, **attributes)
        self._pending.append((future, letter, timestamp, window))
        if len(self._pending) >= 1000:
            yield from self._confirm()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._confirm()

    def _confirm(self) -> Iterator[WindowedValue]:
        pending, self._pending = self._pending, []
        for future, letter, timestamp, window in pending:
            future.result(timeout=self._timeout)  # raises: the bundle is retried
            self._published.inc()
            metrics.counter(f"{metrics.DEAD_LETTERED}_{letter.kind}").inc()
            yield WindowedValue(letter, timestamp, [window])


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
