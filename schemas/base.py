"""The mapping contract: how one validated event becomes one Bigtable row."""

import json
import re
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


def encode(value: Any, encoding: Encoding) -> bytes:
    """Encode one column value for storage."""
    if encoding is Encoding.JSON:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def epoch_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, truncated (integer arithmetic: no float rounding)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_rfc3339_millis(moment: datetime) -> str:
    """UTC RFC 3339 with millisecond precision, e.g. 2026-11-24T06:40:53.123Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# RFC 3339 date-time (section 5.6): full date, 'T' (or space), time, offset. Python's
# fromisoformat alone also takes ISO 8601 forms RFC 3339 excludes (week dates, basic format).
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_event_time(value: Any) -> datetime:
    """Accept an RFC 3339 string with an offset, or integer epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        if not 0 <= value < 253_402_300_800_000:  # year 10000
            raise ValueError("epoch milliseconds out of range")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    if isinstance(value, str):
        if not RFC3339.match(value):
            if RFC3339.match(value + "Z"):
                raise ValueError("RFC 3339 timestamp needs an offset (e.g. Z or +01:00)")
            raise ValueError(f"not an RFC 3339 timestamp: {value[:64]!r}")
        # fromisoformat takes at most 6 fraction digits: nanoseconds are truncated first.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z"))
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-01:00 overflows
            raise ValueError(f"timestamp out of range: {value[:64]!r}") from None
    raise ValueError("must be an RFC 3339 string or epoch milliseconds")


class MappedEvent(BaseModel):
    """Base of every message type: a frozen, strictly validated model that maps to one row.

    Subclasses declare `schema_name`, `table` and `columns`, and implement `row_key`,
    `event_time` and `column_values`. Validation with a `TimeBounds` context also rejects
    event times outside the configured skew.
    """

    # strict: no silent coercion ("21.5" is not a number, 0 is not a boolean); JSON input
    # still maps strings to UUIDs and integers to floats, as JSON has no such types.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    schema_name: ClassVar[str]
    table: ClassVar[TableSpec]
    columns: ClassVar[tuple[Column, ...]]

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
        bounds = info.context
        if isinstance(bounds, TimeBounds):
            bounds.check(self.event_time())
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
