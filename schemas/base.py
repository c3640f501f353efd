"""The mapping contract: how one validated event becomes one Bigtable row."""

import json
import math
import random
import re
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

MAX_ROW_KEY_BYTES = 4096  # Bigtable's hard limit on row key size.
EVENT_TIME_ERROR = "event_time_out_of_range"  # pydantic error type raised by TimeBounds


class Encoding(StrEnum):
    """How a Python value is turned into cell bytes (readers decode with the same rule)."""

    JSON = "json"  # compact JSON, UTF-8
    TEXT = "text"  # str(value), UTF-8; floats use repr() so they round-trip exactly


@dataclass(frozen=True, slots=True)
class Column:
    """One documented column of a schema: family, qualifier and value encoding."""

    family: str
    qualifier: str
    encoding: Encoding


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell to write: the encoded value of a column (the timestamp is the event's)."""

    family: str
    qualifier: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A logical table: its default table id and its column families (max 1 version each)."""

    group: str
    default_table_id: str
    families: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far an event time may be from `now` and still be accepted."""

    now: datetime
    max_age: timedelta
    max_future: timedelta

    def check(self, event_time: datetime) -> None:
        """Raise a pydantic error when event_time is outside [now - max_age, now + max_future]."""
        if event_time < self.now - self.max_age:
            raise PydanticCustomError(
                EVENT_TIME_ERROR,
                "event time {event_time} is older than the maximum age of {limit}s",
                {
                    "event_time": format_rfc3339_millis(event_time),
                    "limit": self._secs(self.max_age),
                },
            )
        if event_time > self.now + self.max_future:
            raise PydanticCustomError(
                EVENT_TIME_ERROR,
                "event time {event_time} is more than {limit}s in the future",
                {
                    "event_time": format_rfc3339_millis(event_time),
                    "limit": self._secs(self.max_future),
                },
            )

    @staticmethod
    def _secs(delta: timedelta) -> int:
        return int(delta.total_seconds())


# One encoder: json.dumps with arguments builds a new JSONEncoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode(value: Any, encoding: Encoding) -> bytes:
    """Encode one column value for storage."""
    if encoding is Encoding.JSON:
        return _JSON.encode(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, truncated (integer arithmetic: no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_epoch_micros(micros: int) -> datetime:
    """The UTC instant `micros` microseconds after the epoch (exact: no float)."""
    return EPOCH + timedelta(microseconds=micros)


def format_rfc3339_millis(moment: datetime) -> str:
    """UTC RFC 3339 with millisecond precision, e.g. 2026-11-24T06:40:53.123Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# RFC 3339 date-time (section 5.6): full date, 'T' (or space), time, offset. Python's
# fromisoformat alone also takes ISO 8601 forms RFC 3339 excludes (week dates, basic format).
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
# Epoch numbers below this are seconds, above it milliseconds: 1e11 s is the year 5138 and
# 1e11 ms is 1973-03-03, so for any event after March 1973 the two readings cannot be confused
# (a millisecond value of 1970-1973 read as seconds lands centuries in the future and is
# refused by the future-skew check, never stored as a wrong time).
EPOCH_SECONDS_BELOW = 100_000_000_000
EPOCH_MILLIS_BELOW = 253_402_300_800_000  # 10000-01-01T00:00:00Z


def _from_epoch_number(value: int | float) -> datetime:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("epoch time must be a finite number")
    # repr() is the shortest text that round-trips the float: 1614939630.123 stays .123 exactly
    # instead of the binary value's .12299990654.
    exact = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if exact < 0 or exact >= EPOCH_MILLIS_BELOW:
        raise ValueError(
            "epoch time out of range: send seconds or milliseconds since 1970 (before 10000)"
        )
    millis = exact * 1000 if exact < EPOCH_SECONDS_BELOW else exact
    return EPOCH + timedelta(milliseconds=int(millis))  # truncated to the millisecond


def parse_event_time(value: Any) -> datetime:
    """An RFC 3339 string with an offset, or a JSON number of epoch seconds or milliseconds.

    Surrounding whitespace is ignored. Numbers below 1e11 are seconds, others milliseconds;
    fractions are allowed. Refused on purpose: a string without an offset (its time zone is
    a guess), digits in a string (a number is sent as a number), booleans.
    """
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        return _from_epoch_number(value)
    if isinstance(value, str):
        text = value.strip()
        if not RFC3339.match(text):
            if RFC3339.match(text + "Z"):
                raise ValueError("RFC 3339 timestamp needs an offset (e.g. Z or +01:00)")
            if text.isascii() and text.replace(".", "", 1).isdigit():
                raise ValueError("epoch time must be a JSON number, not a string")
            raise ValueError(f"not an RFC 3339 timestamp: {value[:64]!r}")
        # fromisoformat takes at most 6 fraction digits: nanoseconds are truncated first.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("z", "Z"))
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-01:00 overflows
            raise ValueError(f"timestamp out of range: {value[:64]!r}") from None
    raise ValueError("must be an RFC 3339 string or epoch milliseconds")


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What validation needs besides the message (pydantic's `context`).

    `bounds`: the accepted event-time range. `services`: the operators' service catalog
    (None: any well-formed id). `event_time_fallback`: the time given to a message that has
    no event time (None: such a message is refused as missing the field).
    """

    bounds: TimeBounds | None = None
    services: frozenset[str] | None = None
    event_time_fallback: datetime | None = None


class _Absent:
    """Default of an event-time field: "the message has none" (null counts as none too)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


def event_time_field(value: Any, info: ValidationInfo) -> datetime:
    """Validate an event-time field; an absent (or null) one takes the context's fallback."""
    if value is ABSENT or value is None:
        context = info.context
        if isinstance(context, ValidationContext) and context.event_time_fallback is not None:
            return context.event_time_fallback.astimezone(UTC)
        raise PydanticCustomError("missing", "Field required")
    return parse_event_time(value)


@dataclass(frozen=True, slots=True)
class Example:
    """One generated message of a schema and the row it must become (`loadgen_example`).

    The row is stated by the plugin's author, not computed with the model, so that the load
    generator's ledger stays independent of the mapping it checks.
    """

    body: dict[str, Any]  # the JSON message, as published
    row_key: str
    event_time: datetime  # the cells' timestamp (truncated to the millisecond when stored)
    cells: dict[str, str]  # "family:qualifier" -> the cell's value as text (UTF-8)


class MappedEvent(BaseModel):
    """Base of every message type: a frozen, strictly validated model that maps to one row.

    Subclasses declare `schema_name`, `table` and `columns`, and implement `row_key`,
    `event_time` and `column_values`. Validation with a `ValidationContext` also rejects
    event times outside its bounds.
    """

    # strict: no silent coercion ("21.5" is not a number, 0 is not a boolean); JSON input
    # still maps strings to UUIDs and integers to floats, as JSON has no such types.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    schema_name: ClassVar[str]
    table: ClassVar[TableSpec]
    columns: ClassVar[tuple[Column, ...]]
    # For `python -m stream.schemas`, e.g. "domain#user" (default: row_key's docstring).
    row_key_shape: ClassVar[str] = ""
    # Cells beyond `columns` that `cells()` adds, described, e.g. ("r:<reading name> (text)",).
    dynamic_cells: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def loadgen_example(cls, rng: random.Random, now: datetime) -> Example:
        """Optional hook: a valid message drawn with `rng`, near `now`, and its row.

        Implement it and `loadgen publish --schema-mix <schema>=<weight>` can generate this
        schema's traffic; without it, publish a file of messages with `--from-file`.
        """
        raise NotImplementedError(f"{cls.schema_name} offers no loadgen_example")

    @classmethod
    def offers_example(cls) -> bool:
        """Whether this model implements `loadgen_example`."""
        return cls.loadgen_example.__func__ is not MappedEvent.loadgen_example.__func__  # type: ignore[attr-defined]

    @abstractmethod
    def row_key(self) -> str:
        """The deterministic row key."""

    @abstractmethod
    def event_time(self) -> datetime:
        """When the event happened (timezone-aware, UTC)."""

    @abstractmethod
    def column_values(self) -> dict[str, Any]:
        """Qualifier -> Python value, for every column in `columns`."""

    @model_validator(mode="after")
    def _event_time_within_bounds(self, info: ValidationInfo) -> "MappedEvent":
        context = info.context
        if isinstance(context, ValidationContext) and context.bounds is not None:
            context.bounds.check(self.event_time())
        return self

    def timestamp_micros(self) -> int:
        """Cell timestamp: the event time truncated to milliseconds (Bigtable's granularity)."""
        return epoch_millis(self.event_time()) * 1000

    def cells(self) -> tuple[Cell, ...]:
        """Every cell of the row, encoded as the columns declare."""
        values = self.column_values()
        return tuple(
            Cell(col.family, col.qualifier.encode(), encode(values[col.qualifier], col.encoding))
            for col in self.columns
        )
