"""Dead letters, in one place: building them, their envelope, publishing them, routing them.

Every refused message becomes one `DeadLetter` (built by `letter`), is published with its raw
bytes and original attributes plus `deadletter_*` ones (`dead_letter_message`,
`PublishDeadLettersFn`), and only then acknowledged. `DeadLetters` routes each failure branch
to the sink's dead-letter transform. `original_message` is the inverse of
`dead_letter_message` (the redrive tool, stream/deadletters, sends originals back with it).
"""

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping

import apache_beam as beam
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as ApiPublisherClient
from google.pubsub_v1 import PubsubMessage

from schemas.base import format_rfc3339_millis
from stream.pipeline import metrics
from stream.pipeline.io import clients
from stream.pipeline.leases import TRANSIENT_PUBSUB_ERRORS
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

ATTRIBUTE_PREFIX = "deadletter_"
MAX_ATTRIBUTES = 100  # Pub/Sub's limit per message
MAX_ATTRIBUTE_VALUE = 1024
MAX_ERROR_TEXT = 900  # leaves room in the 1024-byte attribute value
PENDING_PUBLISHES = 1000  # publishes awaited at once before more are sent
KIND_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}kind"
ERROR_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}error"
STAGE_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}stage"
MESSAGE_ID_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}message_id"  # the original delivery's message id
SCHEMA_NAME_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}schema"
PUBLISH_TIME_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}publish_time"  # the original's publish time
ENVELOPE_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}envelope"
ENVELOPE_JSON = "json"
# How many times a message was sent back from the dead letters. Not `deadletter_`-prefixed on
# purpose: it is an ordinary attribute of the redriven message, so a new dead letter of it
# carries it among the originals, and the redrive tool can stop a message going round forever.
REDRIVE_COUNT_ATTRIBUTE = "redrive_count"
# Attributes Pub/Sub itself adds when a subscription's dead-letter policy forwards a message
# (CloudPubSubDeadLetterSourceDeliveryCount, ...): bookkeeping, not part of the original.
PUBSUB_FORWARD_PREFIX = "CloudPubSubDeadLetter"
MAX_ENVELOPES = 8  # unwrapped at most, so a malicious letter cannot make us loop


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
        KIND_ATTRIBUTE: str(letter.kind),
        ERROR_ATTRIBUTE: letter.error.encode()[:MAX_ATTRIBUTE_VALUE].decode(errors="ignore"),
        STAGE_ATTRIBUTE: str(letter.stage),
        MESSAGE_ID_ATTRIBUTE: raw.message_id,
        SCHEMA_NAME_ATTRIBUTE: letter.schema,
    }
    if raw.publish_time is not None:
        ours[PUBLISH_TIME_ATTRIBUTE] = format_rfc3339_millis(raw.publish_time)
    merged = {**raw.attributes, **ours}
    if len(merged) <= MAX_ATTRIBUTES:
        return raw.data, merged
    envelope = {
        "data_base64": base64.b64encode(raw.data).decode(),
        "attributes": raw.attributes,
    }
    ours[ENVELOPE_ATTRIBUTE] = ENVELOPE_JSON
    return json.dumps(envelope, sort_keys=True).encode(), ours


class EnvelopeError(ValueError):
    """A letter marked as a JSON envelope whose data is not one (it cannot be unwrapped)."""


def _unwrap(data: bytes) -> tuple[bytes, dict[str, str]]:
    try:
        envelope = json.loads(data)
        inner = base64.b64decode(envelope["data_base64"], validate=True)
        attributes = envelope["attributes"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise EnvelopeError(f"not a dead-letter envelope: {type(exc).__name__}: {exc}") from None
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise EnvelopeError("not a dead-letter envelope: its attributes are not text to text")
    return inner, attributes


def original_message(data: bytes, attributes: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The message a dead letter was made from: (original bytes, original attributes).

    The inverse of `dead_letter_message`: a JSON envelope is unwrapped, and so is an envelope
    found inside it (a letter once republished as it was, envelope and all, then refused
    again), so sending a letter back never nests envelopes; then every `deadletter_*`
    attribute is removed, and so are the `CloudPubSubDeadLetter*` ones Pub/Sub adds when it
    forwards a message itself. Every other attribute stays, REDRIVE_COUNT_ATTRIBUTE included.
    Raises EnvelopeError for a marked letter whose data is not an envelope.
    """
    current = dict(attributes)
    for _ in range(MAX_ENVELOPES):
        if current.get(ENVELOPE_ATTRIBUTE) != ENVELOPE_JSON:
            break
        data, current = _unwrap(data)
    else:
        if current.get(ENVELOPE_ATTRIBUTE) == ENVELOPE_JSON:
            raise EnvelopeError(f"envelopes nested more than {MAX_ENVELOPES} deep")
    kept = {
        key: value
        for key, value in current.items()
        if not key.startswith((ATTRIBUTE_PREFIX, PUBSUB_FORWARD_PREFIX))
    }
    return data, kept


def redrive_count(attributes: Mapping[str, str]) -> int:
    """How many times the message was redriven (0: never, or a counter that is not a number).

    A counter someone else set to nonsense counts as 0; the next redrive writes a real one,
    so the loop stays bounded either way.
    """
    value = attributes.get(REDRIVE_COUNT_ATTRIBUTE, "").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


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


REQUEST_BYTES = 9 * 1024 * 1024  # Pub/Sub takes at most 10 MB per publish request
REQUEST_MESSAGES = 1000
# A dead-letter topic that is not there, or that we may not publish to, is configuration,
# not a passing fault: fail at once and say so (the messages are given back, not lost).
REFUSED_PUBLISH = (gexc.NotFound, gexc.PermissionDenied, gexc.Unauthenticated)


def publish_chunks(messages: list[tuple[bytes, dict[str, str]]]) -> Iterator[range]:
    """Index ranges of `messages` that fit one Publish request each (count and bytes)."""
    start, size = 0, 0
    for index, (data, attributes) in enumerate(messages):
        item = len(data) + sum(len(k) + len(v) for k, v in attributes.items()) + 64
        if index > start and (index - start >= REQUEST_MESSAGES or size + item > REQUEST_BYTES):
            yield range(start, index)
            start, size = index, 0
        size += item
    if start < len(messages):
        yield range(start, len(messages))


def publish_messages(
    publisher: pubsub_v1.PublisherClient,
    topic: str,
    messages: list[tuple[bytes, dict[str, str]]],
    retry: Retry,
    timeout: float,
) -> list[str]:
    """Publish one request's messages and wait: their new message ids, in order.

    The plain Publish API method, not the client's batching `publish(topic, data, **attrs)`:
    that takes attributes as keyword arguments, so an original attribute named `timeout`,
    `retry`, `ordering_key` or `data` would be taken for an option (a poison message).
    """
    request = [PubsubMessage(data=data, attributes=attributes) for data, attributes in messages]
    response = ApiPublisherClient.publish(
        publisher, topic=topic, messages=request, retry=retry, timeout=timeout
    )
    return list(response.message_ids)


class PublishDeadLettersFn(beam.DoFn):
    """Publishes dead letters; emits each one only after Pub/Sub confirmed it.

    Letters are published a request at a time (at most 1,000, or the bundle's end). Transient
    Pub/Sub errors are retried with backoff for up to `retry_seconds`; only then, or at once
    for a missing topic or a refused permission, the bundle fails, so the original message is
    never acknowledged without its dead letter being stored (it is given back instead).
    """

    _publisher: pubsub_v1.PublisherClient  # from setup(): shared per process

    def __init__(self, topic: str, retry_seconds: float = 900.0, timeout_seconds: float = 60.0):
        self._topic = topic
        self._retry_seconds = retry_seconds
        self._timeout = timeout_seconds
        self._pending: list[tuple[DeadLetter, Timestamp, BoundedWindow]] = []
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
        self._pending.append((letter, timestamp, window))
        if len(self._pending) >= PENDING_PUBLISHES:
            yield from self._confirm()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._confirm()

    def _confirm(self) -> Iterator[WindowedValue]:
        pending, self._pending = self._pending, []
        messages = [dead_letter_message(letter) for letter, _, _ in pending]
        retry = Retry(
            predicate=if_exception_type(*TRANSIENT_PUBSUB_ERRORS),
            initial=0.1,
            maximum=10.0,
            multiplier=2.0,
            timeout=self._retry_seconds,
        )
        for chunk in publish_chunks(messages):
            try:
                publish_messages(
                    self._publisher, self._topic, [messages[i] for i in chunk], retry, self._timeout
                )
            except REFUSED_PUBLISH as exc:
                raise RuntimeError(
                    f"cannot publish dead letters to {self._topic}: {exc}. Create the topic or "
                    "grant the job's service account roles/pubsub.publisher on it."
                ) from exc
            for i in chunk:
                letter, timestamp, window = pending[i]
                self._published.inc()
                metrics.counter(f"{metrics.DEAD_LETTERED}_{letter.kind}").inc()
                yield WindowedValue(letter, timestamp, [window])
