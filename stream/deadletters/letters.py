"""A dead letter as pulled from the dead-letter subscription: why it was refused, its original."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.pubsub_v1 import PubsubMessage

from schemas.base import from_epoch_micros
from stream.pipeline.letters import (
    ERROR_ATTRIBUTE,
    KIND_ATTRIBUTE,
    MESSAGE_ID_ATTRIBUTE,
    PUBLISH_TIME_ATTRIBUTE,
    SCHEMA_NAME_ATTRIBUTE,
    STAGE_ATTRIBUTE,
    EnvelopeError,
    original_message,
    redrive_count,
)


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter: its own Pub/Sub identity and the attributes the pipeline gave it.

    `message_id` and `publish_time` are the letter's own (when the pipeline refused the
    message); `original_message_id` and `original_publish_time` are those of the refused
    message. A letter Pub/Sub forwarded itself (a subscription's dead-letter policy) has no
    `deadletter_*` attributes: its kind, stage and schema are empty.
    """

    message_id: str
    ack_id: str
    publish_time: datetime
    data: bytes
    attributes: dict[str, str]

    @property
    def kind(self) -> str:
        """`deadletter_kind` (e.g. unknown_service)."""
        return self.attributes.get(KIND_ATTRIBUTE, "")

    @property
    def error(self) -> str:
        """`deadletter_error`: the pipeline's text."""
        return self.attributes.get(ERROR_ATTRIBUTE, "")

    @property
    def stage(self) -> str:
        """`deadletter_stage`: parse, write or rollup."""
        return self.attributes.get(STAGE_ATTRIBUTE, "")

    @property
    def schema(self) -> str:
        """`deadletter_schema`: the schema the pipeline chose (empty if it knew none)."""
        return self.attributes.get(SCHEMA_NAME_ATTRIBUTE, "")

    @property
    def original_message_id(self) -> str:
        """The refused message's own id (`deadletter_message_id`)."""
        return self.attributes.get(MESSAGE_ID_ATTRIBUTE, "")

    @property
    def original_publish_time(self) -> str:
        """The refused message's publish time, RFC 3339 (empty for a backfilled line)."""
        return self.attributes.get(PUBLISH_TIME_ATTRIBUTE, "")

    def original(self) -> tuple[bytes, dict[str, str]]:
        """The refused message's bytes and attributes (raises EnvelopeError if unreadable)."""
        return original_message(self.data, self.attributes)

    def redrives(self) -> int:
        """How many times the refused message had been redriven (its original's counter).

        For an envelope letter the counter is inside the envelope; an unreadable one: 0.
        """
        try:
            return redrive_count(self.original()[1])
        except EnvelopeError:
            return 0


def from_received(received: Any) -> Letter:
    """A Letter from a pulled `ReceivedMessage` (the client's proto-plus type)."""
    message = received.message
    stamp = PubsubMessage.pb(message).publish_time  # the raw Timestamp: exact to the us
    micros = stamp.seconds * 1_000_000 + stamp.nanos // 1000
    return Letter(
        message_id=message.message_id,
        ack_id=received.ack_id,
        publish_time=from_epoch_micros(micros),
        data=bytes(message.data),
        attributes=dict(message.attributes),
    )
