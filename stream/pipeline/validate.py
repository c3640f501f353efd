"""Decode and validate one raw message: a pure function from bytes to an event or a reason."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import ValidationError

from schemas.base import (
    EVENT_TIME_ERROR,
    MAX_ROW_KEY_BYTES,
    TimeBounds,
    ValidationContext,
    parse_event_time,
)
from schemas.consent import UNKNOWN_SERVICE_ERROR
from schemas.registry import DEFAULT_SCHEMA, SCHEMA_ATTRIBUTE, schemas
from stream.pipeline.letters import letter
from stream.pipeline.messages import (
    SOURCE_MTIME_ATTRIBUTE,
    DeadLetter,
    ErrorKind,
    RawMessage,
    Stage,
    ValidEvent,
)


class MissingEventTime(StrEnum):
    """What a message without an event time gets (`--missing_event_time`)."""

    REJECT = "reject"  # dead-lettered as missing_field (the default)
    PUBLISH_TIME = "publish_time"  # the Pub/Sub publish time, as the seed's scale_endpoint did
    FILE_MTIME = "file_mtime"  # backfill: the modification time of the line's file
    FIXED = "fixed"  # backfill: one explicit instant


@dataclass(frozen=True, slots=True)
class EventTimeFallback:
    """The policy for messages without an event time; never the wall clock (not replayable)."""

    mode: MissingEventTime = MissingEventTime.REJECT
    instant: datetime | None = None  # for FIXED

    def for_message(self, raw: RawMessage) -> datetime | None:
        """The event time this message gets if it has none (None: it is refused)."""
        if self.mode is MissingEventTime.PUBLISH_TIME:
            return raw.publish_time
        if self.mode is MissingEventTime.FIXED:
            return self.instant
        if self.mode is MissingEventTime.FILE_MTIME:
            try:
                return parse_event_time(raw.attributes.get(SOURCE_MTIME_ATTRIBUTE, ""))
            except ValueError:
                return None  # no usable time: the message is refused as missing it
        return None


@dataclass(frozen=True, slots=True)
class ParseRules:
    """Everything validation needs besides the message: picklable, set once at startup."""

    default_schema: str = DEFAULT_SCHEMA
    schema_attribute: str = SCHEMA_ATTRIBUTE
    max_message_bytes: int = 64 * 1024
    max_event_age: timedelta = timedelta(days=7)
    max_future_skew: timedelta = timedelta(minutes=5)
    service_catalog: frozenset[str] | None = None  # None: any well-formed service id
    missing_event_time: EventTimeFallback = field(default_factory=EventTimeFallback)


def _reject(
    raw: RawMessage, kind: ErrorKind, error: str, schema: str = "", stage: Stage = Stage.PARSE
) -> DeadLetter:
    return letter(raw, kind, error, stage, schema)


def _classify(exc: ValidationError) -> tuple[ErrorKind, str]:
    """The most specific kind among the errors, and a readable `field: problem` list."""
    errors = exc.errors(include_url=False)
    types = {err["type"] for err in errors}
    top_level = {err["type"] for err in errors if not err["loc"]}
    if "json_invalid" in types:
        kind = ErrorKind.INVALID_JSON
    elif top_level & {"model_type", "model_attributes_type"}:
        return ErrorKind.INVALID_JSON, "the message body must be a JSON object"
    elif "missing" in types:
        kind = ErrorKind.MISSING_FIELD
    elif "extra_forbidden" in types:
        kind = ErrorKind.UNEXPECTED_FIELD
    elif EVENT_TIME_ERROR in types:
        kind = ErrorKind.EVENT_TIME_OUT_OF_RANGE
    elif types == {UNKNOWN_SERVICE_ERROR}:
        # Only when nothing else is wrong: a message a catalog change cannot fix is not one.
        kind = ErrorKind.UNKNOWN_SERVICE
    else:
        kind = ErrorKind.INVALID_FIELD
    parts = []
    for err in errors:
        where = ".".join(str(part) for part in err["loc"]) or "<message>"
        parts.append(f"{where}: {err['msg']}")
    return kind, "; ".join(parts)


def validate(raw: RawMessage, rules: ParseRules, now: datetime) -> ValidEvent | DeadLetter:
    """Turn one raw message into a ValidEvent, or a DeadLetter saying precisely why not."""
    schema = raw.attributes.get(rules.schema_attribute) or rules.default_schema
    model = schemas().get(schema)
    if model is None:
        known = ", ".join(sorted(schemas()))
        return _reject(raw, ErrorKind.UNKNOWN_SCHEMA, f"unknown schema {schema!r}; known: {known}")
    size = len(raw.data)
    if size == 0:
        return _reject(raw, ErrorKind.EMPTY_PAYLOAD, "the message body is empty", schema)
    if size > rules.max_message_bytes:
        return _reject(
            raw,
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"the message body is {size} bytes; the limit is {rules.max_message_bytes}",
            schema,
        )
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(raw, ErrorKind.NOT_UTF8, f"the message body is not UTF-8: {exc}", schema)
    context = ValidationContext(
        bounds=TimeBounds(now=now, max_age=rules.max_event_age, max_future=rules.max_future_skew),
        services=rules.service_catalog,
        event_time_fallback=rules.missing_event_time.for_message(raw),
    )
    try:
        # A leading byte-order mark is ignored (RFC 8259 allows it; Windows tools write it).
        event = model.model_validate_json(text.removeprefix("\ufeff"), context=context)
    except ValidationError as exc:
        kind, error = _classify(exc)
        return _reject(raw, kind, f"{schema}: {error}", schema)
    key_size = len(event.row_key().encode())
    if key_size > MAX_ROW_KEY_BYTES:
        return _reject(
            raw,
            ErrorKind.ROW_KEY_TOO_LARGE,
            f"row key is {key_size} bytes; Bigtable allows at most {MAX_ROW_KEY_BYTES}",
            schema,
        )
    return ValidEvent(event=event, raw=raw)
