"""Beam's native Pub/Sub read (Dataflow, the DirectRunner), as RawMessages."""

from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from schemas.base import from_epoch_micros
from stream.pipeline.config import PubSubEndpoints
from stream.pipeline.io.no_acks import no_acknowledgement
from stream.pipeline.messages import RawMessage


def _from_pubsub_message(message: PubsubMessage, element_time: Timestamp | None) -> RawMessage:
    """The RawMessage of a native read's message.

    `element_time` is the element's timestamp, which is the publish time when the read has no
    timestamp attribute: the fallback for a runner that leaves `publish_time` unset.
    """
    publish_time = message.publish_time
    if publish_time is not None and not isinstance(publish_time, datetime):
        publish_time = datetime.fromtimestamp(publish_time.timestamp(), tz=UTC)
    if publish_time is None and element_time is not None:
        publish_time = from_epoch_micros(element_time.micros)
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


class ReadNative(beam.PTransform):
    """PBegin -> PCollection[RawMessage], from Beam's ReadFromPubSub."""

    def __init__(self, endpoints: PubSubEndpoints) -> None:
        super().__init__()
        self._endpoints = endpoints

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        endpoints = self._endpoints
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


class NativeSource:
    """Beam's native ReadFromPubSub, for Dataflow and the DirectRunner.

    Dataflow acknowledges after a durable commit and dedups by message id; the DirectRunner
    acknowledges on read, before processing (see the README's Guarantees).
    """

    def __init__(self, endpoints: PubSubEndpoints) -> None:
        self._endpoints = endpoints

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage]."""
        return ReadNative(self._endpoints)

    def acknowledge(self) -> beam.PTransform:
        """Nothing to do: the native read acknowledged already."""
        return no_acknowledgement()
