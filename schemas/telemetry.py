"""Device telemetry readings: a second, differently shaped event type with its own table."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from schemas.base import (
    ABSENT,
    Cell,
    Column,
    Encoding,
    MappedEvent,
    TableSpec,
    encode,
    epoch_millis,
    event_time_field,
    format_rfc3339_millis,
)

READINGS_FAMILY = "r"
META_FAMILY = "m"
TELEMETRY_TABLE = TableSpec(
    group="telemetry", default_table_id="telemetry", families=(READINGS_FAMILY, META_FAMILY)
)

# Device ids are opaque to us; the row-key size check (4 KiB) is what bounds them in practice.
DeviceId = Annotated[str, Field(min_length=1, max_length=16_384, pattern=r"^[A-Za-z0-9._:-]+$")]
ReadingName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class TelemetryV1(MappedEvent):
    """`{"device_id", "recorded_at", "readings": {name: number}, "firmware"}`.

    One row per reading time: key `device_id#<recorded_at epoch millis, 13 digits>`, so a
    device's readings are contiguous and time-ordered. Each reading is its own column in
    family `r` (dynamic qualifiers); `firmware` and `recorded_at` go to family `m`.
    """

    schema_name = "telemetry.v1"
    table = TELEMETRY_TABLE
    row_key_shape = "device_id#<recorded_at, epoch ms, 13 digits>"
    dynamic_cells = ("r:<reading name> (text)",)
    columns = (
        Column(META_FAMILY, "firmware", Encoding.TEXT),
        Column(META_FAMILY, "recorded_at", Encoding.TEXT),
    )

    device_id: DeviceId
    recorded_at: datetime = Field(default=ABSENT, validate_default=True)
    readings: Annotated[dict[ReadingName, float], Field(min_length=1, max_length=64)]
    firmware: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]

    @field_validator("recorded_at", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any, info: ValidationInfo) -> datetime:
        return event_time_field(value, info)

    def row_key(self) -> str:
        """`device_id#<13-digit epoch millis>`: sortable by time within a device."""
        return f"{self.device_id}#{epoch_millis(self.recorded_at):013d}"

    def event_time(self) -> datetime:
        """When the device took the readings."""
        return self.recorded_at

    def column_values(self) -> dict[str, Any]:
        """Meta columns; readings become dynamic columns in `cells`."""
        return {
            "firmware": self.firmware,
            "recorded_at": format_rfc3339_millis(self.recorded_at),
        }

    def cells(self) -> tuple[Cell, ...]:
        """Meta cells plus one `r:<reading>` cell per reading (text-encoded floats)."""
        readings = tuple(
            Cell(READINGS_FAMILY, name.encode(), encode(float(value), Encoding.TEXT))
            for name, value in sorted(self.readings.items())
        )
        return super().cells() + readings
