"""The dead-letter topic: letters published a request at a time, each emitted once confirmed."""

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.transforms.window import BoundedWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from google.api_core.retry import Retry
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as ApiPublisherClient
from google.pubsub_v1 import PubsubMessage

from stream.pipeline import metrics
from stream.pipeline.config import DEFAULT_WRITE_RETRY
from stream.pipeline.io import clients
from stream.pipeline.io.pubsub_calls import (
    PUBLISHER_ROLE,
    REFUSED_PUBSUB_ERRORS,
    pubsub_retry,
    refused_by_pubsub,
)
from stream.pipeline.letters import dead_letter_message
from stream.pipeline.messages import DeadLetter

PENDING_PUBLISHES = 1000  # publishes awaited at once before more are sent
REQUEST_BYTES = 9 * 1024 * 1024  # Pub/Sub takes at most 10 MB per publish request
REQUEST_MESSAGES = 1000
PUBLISH_BACKOFF_MAXIMUM_SECONDS = 10.0


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

    Transient errors are retried with backoff for up to `retry_seconds`; past that, or at once
    for a missing topic or a refused permission, the bundle fails: an original is never
    acknowledged without its letter stored (it is given back instead).
    """

    _publisher: pubsub_v1.PublisherClient  # from setup(): shared per process

    def __init__(
        self,
        topic: str,
        retry_seconds: float = DEFAULT_WRITE_RETRY.total_seconds(),
        timeout_seconds: float = 60.0,
    ) -> None:
        self._topic = topic
        self._retry_seconds = retry_seconds
        self._timeout = timeout_seconds
        self._pending: list[tuple[DeadLetter, Timestamp, BoundedWindow]] = []
        self._published = metrics.counter(metrics.DEAD_LETTERED)
        self._by_kind = metrics.counters_by_kind(metrics.DEAD_LETTERED)

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
        retry = pubsub_retry(self._retry_seconds, maximum=PUBLISH_BACKOFF_MAXIMUM_SECONDS)
        for chunk in publish_chunks(messages):
            try:
                publish_messages(
                    self._publisher, self._topic, [messages[i] for i in chunk], retry, self._timeout
                )
            except REFUSED_PUBSUB_ERRORS as exc:
                raise refused_by_pubsub(
                    exc, "publish dead letters to", self._topic, PUBLISHER_ROLE
                ) from exc
            for i in chunk:
                letter, timestamp, window = pending[i]
                self._published.inc()
                self._by_kind[letter.kind].inc()
                yield WindowedValue(letter, timestamp, [window])
