"""Rollup rows: `<domain or device>#<window start, RFC 3339>` in the rollup table.

Keys sort by time within a domain or device. Cells are written at the window's end plus the
update number in milliseconds (0 for the first value of a window, then 1, 2, ... for each
late update): a retried update rewrites its own cells, and a later update (which holds
everything the earlier ones did) writes a newer version, so the newest value wins even when
the sink writes updates out of order.
"""

from dataclasses import dataclass
from datetime import datetime

from schemas.base import Cell, TableSpec, epoch_millis, format_rfc3339_millis, from_epoch_micros
from stream.pipeline.rollups.accumulators import Accumulator

CONSENT_FAMILY = "consent"
TELEMETRY_FAMILY = "telemetry"
ROLLUP_TABLE = TableSpec(
    group="rollup", default_table_id="scale-rollups", families=(CONSENT_FAMILY, TELEMETRY_FAMILY)
)


@dataclass(frozen=True, slots=True)
class RollupRow:
    """One aggregate row: the key's window and its values, ready to be written."""

    kind: str  # consent | telemetry
    key: str  # domain or device id
    window_start: datetime
    window_end: datetime
    values: dict[str, str]  # qualifier -> text value
    update: int = 0  # 0 for a window's first value, then 1, 2, ... (late updates)
    table = ROLLUP_TABLE

    def row_key(self) -> str:
        """`<domain or device>#<window start, RFC 3339 ms>`: sorts by time within a key."""
        return f"{self.key}#{format_rfc3339_millis(self.window_start)}"

    def timestamp_micros(self) -> int:
        """Window end + update number (ms): newer values win, a retry rewrites itself."""
        return (epoch_millis(self.window_end) + self.update) * 1000

    def cells(self) -> tuple[Cell, ...]:
        family = CONSENT_FAMILY if self.kind == "consent" else TELEMETRY_FAMILY
        return tuple(
            Cell(family, name.encode(), value.encode())
            for name, value in sorted(self.values.items())
        )


def rollup_row(
    kind: str, key: str, acc: Accumulator, start_micros: int, end_micros: int, update: int = 0
) -> RollupRow:
    """The row for one key and window from its accumulated value."""
    values = acc.values()
    return RollupRow(
        kind=kind,
        key=key,
        window_start=from_epoch_micros(start_micros),
        window_end=from_epoch_micros(end_micros),
        values=values,
        update=update,
    )
