"""Dead letters, in one place: building them, their envelope, publishing them, routing them.

Every refused message becomes one `DeadLetter` (built by `letter`), is published with its raw
bytes and original attributes plus `deadletter_*` ones (`dead_letter_message`,
`PublishDeadLettersFn`), and only then acknowledged. `DeadLetters` routes each failure branch
to the sink's dead-letter transform.
"""

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.cloud import pubsub_v1

from schemas.base import format_rfc3339_millis
from stream.pipeline import metrics
from stream.pipeline.io import clients
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

ATTRIBUTE_PREFIX = "deadletter_"
MAX_ATTRIBUTES = 100  # Pub/Sub's limit per message
MAX_ATTRIBUTE_VALUE = 1024
MAX_ERROR_TEXT = 900  # leaves room in the 1024-byte attribute value
PENDING_PUBLISHES = 1000  # publishes awaited at once before more are sent


def letter(
    raw: RawMessage, kind: ErrorKind, error: str, stage: Stage, schema: str = ""
) -> DeadLetter:
    """The dead letter of `raw`: why (kind, error text capped in bytes) and where (stage)."""
    capped = error.encode()[:MAX_ERROR_TEXT].decode(errors="ignore")  # bytes, not characters
    return DeadLetter(raw=raw, kind=kind, error=capped, stage=stage, schema=schema)


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


class DeadLetters(beam.PTransform):
    """Publish each branch's failures with the sink's dead-letter transform.

    Per branch, not after a Flatten: read -> write -> ack stays one fused stage
    (stream/DESIGN.md, "One fused stage").
    """

    def __init__(self, publish: Callable[[], beam.PTransform]) -> None:
        """`publish`: the sink's transform, PCollection[DeadLetter] -> the letters once stored."""
        super().__init__()
        self._publish = publish

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {name: pcoll | name >> self._publish() for name, pcoll in branches.items()}


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
        if len(self._pending) >= PENDING_PUBLISHES:
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
