"""Dead letters as data: building one, its attributes and envelope, and the original inside it.

Every refused message becomes one `DeadLetter` (`letter`, or one of the builders below for the
write and rollup stages). `dead_letter_message` is what is published: the raw bytes and
original attributes plus `deadletter_*` ones; `original_message` is its inverse (the redrive
tool sends originals back with it). Pure: no Beam, no Google Cloud client.
"""

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import timedelta

from schemas.base import format_rfc3339_millis, from_epoch_micros
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage, ValidEvent

ATTRIBUTE_PREFIX = "deadletter_"
MAX_ATTRIBUTES = 100  # Pub/Sub's limit per message
MAX_ATTRIBUTE_VALUE = 1024
MAX_ERROR_TEXT = 900  # leaves room in the 1024-byte attribute value
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
# What a refused rollup row's letter carries instead of a message (none stands behind it).
ROLLUP_ATTRIBUTE = "rollup"


def letter(
    raw: RawMessage, kind: ErrorKind, error: str, stage: Stage, schema: str = ""
) -> DeadLetter:
    """The dead letter of `raw`: why (kind, error text capped in bytes) and where (stage)."""
    capped = error.encode()[:MAX_ERROR_TEXT].decode(errors="ignore")  # bytes, not characters
    return DeadLetter(raw=raw, kind=kind, error=capped, stage=stage, schema=schema)


def write_rejected(event: ValidEvent, cause: BaseException | None) -> DeadLetter:
    """The letter of an event whose row Bigtable refused for good."""
    error = f"Bigtable rejected row {event.event.row_key()!r}: {cause}"
    return letter(event.raw, ErrorKind.WRITE_REJECTED, error, Stage.WRITE, event.event.schema_name)


def rollup_rejected(
    kind: str, row_key: str, values: Mapping[str, str], cause: BaseException | None
) -> DeadLetter:
    """The letter of a rollup row Bigtable refused for good: the aggregate itself, as JSON."""
    body = {"row_key": row_key, "values": dict(values)}
    raw = RawMessage(data=json.dumps(body).encode(), attributes={ROLLUP_ATTRIBUTE: kind})
    error = f"Bigtable rejected rollup row {row_key!r}: {cause}"
    return letter(raw, ErrorKind.WRITE_REJECTED, error, Stage.ROLLUP, f"rollup.{kind}")


def too_late(
    kind: str,
    key: str,
    event_ms: int,
    raw: RawMessage,
    schema: str,
    window: timedelta,
    lateness: timedelta,
) -> DeadLetter:
    """The letter of an event that reached its rollup after the window closed (row written)."""
    event_time = from_epoch_micros(event_ms * 1000)
    error = (
        f"event time {format_rfc3339_millis(event_time)} of {kind} {key!r} arrived "
        f"after its {window.total_seconds():.0f}s window closed (allowed "
        f"lateness {lateness.total_seconds():.0f}s): the rollup excludes it; "
        "its row was written"
    )
    return letter(raw, ErrorKind.TOO_LATE, error, Stage.ROLLUP, schema)


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
