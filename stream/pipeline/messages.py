"""Immutable records that flow between pipeline stages."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from schemas.base import MappedEvent


class ErrorKind(StrEnum):
    """Why a message went to the dead-letter topic (the `deadletter_kind` attribute)."""

    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    UNKNOWN_SCHEMA = "unknown_schema"
    MISSING_FIELD = "missing_field"
    UNEXPECTED_FIELD = "unexpected_field"
    INVALID_FIELD = "invalid_field"
    EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
    UNKNOWN_SERVICE = "unknown_service"
    ROW_KEY_TOO_LARGE = "row_key_too_large"
    WRITE_REJECTED = "write_rejected"
    TOO_LATE = "too_late"


# Set by the file source on every line: its file's modification time (RFC 3339, ms), the
# event time of lines without one under `--missing_event_time=file_mtime`.
SOURCE_MTIME_ATTRIBUTE = "source_mtime"


class Stage(StrEnum):
    """Which pipeline stage rejected a message (the `deadletter_stage` attribute)."""

    PARSE = "parse"
    WRITE = "write"
    ROLLUP = "rollup"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Pub/Sub message as read, before any interpretation.

    `ack_id` is set only by sources that acknowledge after the write (the portable pull
    source); sources that acknowledge on read (the native ReadFromPubSub) leave it None.
    """

    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    publish_time: datetime | None = None
    ack_id: str | None = None


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A message that passed validation, with the typed event and where it came from."""

    event: MappedEvent
    raw: RawMessage


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be stored, with the reason; published with its raw bytes."""

    raw: RawMessage
    kind: ErrorKind
    error: str
    stage: Stage
    schema: str = ""


@dataclass(frozen=True, slots=True)
class Written:
    """A row that Bigtable accepted (what the write stage emits downstream)."""

    table_id: str
    row_key: str
    timestamp_micros: int
    raw: RawMessage
