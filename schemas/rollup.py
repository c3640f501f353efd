"""Per-window aggregates: consent per domain, telemetry per device, and their row mapping.

Accumulators are keyed by event identity ((user, event ms) for consent, event ms for a
device's readings), so a message delivered twice (a duplicate publish, a Pub/Sub
redelivery) counts once. Rows: `<domain or device>#<window start, RFC 3339>`, sortable by
time within a key.

Cells are written at the window's end plus the update number in milliseconds (0 for the
first value of a window, then 1, 2, ... for each late update). A retried update rewrites
its own cells (same timestamp, no new version). A later update holds everything the earlier
ones did and writes a newer version, so the newest value wins even when the sink writes
updates out of order (its bundles for one row may be in flight at the same time; with one
timestamp per window an older value could be the last write, measured on Prism).
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.base import Cell, Encoding, TableSpec, encode, epoch_millis, format_rfc3339_millis
from schemas.consent import ConsentV1, ConsentV2
from schemas.telemetry import TelemetryV1

CONSENT_FAMILY = "consent"
TELEMETRY_FAMILY = "telemetry"
ROLLUP_TABLE = TableSpec(
    group="rollup", default_table_id="scale-rollups", families=(CONSENT_FAMILY, TELEMETRY_FAMILY)
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# One compact, picklable observation per event: what crosses the shuffle to the rollups.
# consent:   ("consent", domain, (user, event_ms, granted services))
# telemetry: ("telemetry", device, (event_ms, ((reading, value), ...)))
ConsentFact = tuple[str, int, tuple[str, ...]]
TelemetryFact = tuple[int, tuple[tuple[str, float], ...]]


def observe(event: object) -> tuple[str, str, ConsentFact | TelemetryFact] | None:
    """The rollup observation of a validated event, or None for types without rollups."""
    if isinstance(event, ConsentV1):
        return (
            "consent",
            event.domain,
            (str(event.user), epoch_millis(event.event_time()), tuple(event.services)),
        )
    if isinstance(event, ConsentV2):
        granted = tuple(grant.id for grant in event.services if grant.granted)
        return (
            "consent",
            event.domain,
            (str(event.user), epoch_millis(event.event_time()), granted),
        )
    if isinstance(event, TelemetryV1):
        readings = tuple(sorted((name, float(v)) for name, v in event.readings.items()))
        return ("telemetry", event.device_id, (epoch_millis(event.event_time()), readings))
    return None


@dataclass
class ConsentAccumulator:
    """Distinct requests of one domain in one window: (user, event ms) -> granted services."""

    requests: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)

    def add(self, fact: ConsentFact) -> None:
        user, millis, services = fact
        self.requests[(user, millis)] = services

    def merge(self, other: "ConsentAccumulator") -> None:
        self.requests.update(other.requests)


@dataclass
class TelemetryAccumulator:
    """Distinct readings of one device in one window: event ms -> readings."""

    readings: dict[int, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    def add(self, fact: TelemetryFact) -> None:
        millis, values = fact
        self.readings[millis] = values

    def merge(self, other: "TelemetryAccumulator") -> None:
        self.readings.update(other.readings)


Accumulator = ConsentAccumulator | TelemetryAccumulator


def new_accumulator(kind: str) -> Accumulator:
    """An empty accumulator for `consent` or `telemetry`."""
    return ConsentAccumulator() if kind == "consent" else TelemetryAccumulator()


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


def consent_values(acc: ConsentAccumulator) -> dict[str, str]:
    """requests, distinct_users, and `service:<id>` = requests granting that service."""
    services: Counter[str] = Counter()
    for granted in acc.requests.values():
        services.update(granted)
    values = {
        "requests": str(len(acc.requests)),
        "distinct_users": str(len({user for user, _ in acc.requests})),
    }
    values.update({f"service:{name}": str(n) for name, n in services.items()})
    return values


def telemetry_values(acc: TelemetryAccumulator) -> dict[str, str]:
    """`<reading>:count|min|max|mean` for every reading seen in the window."""
    by_name: dict[str, list[float]] = {}
    for readings in acc.readings.values():
        for name, value in readings:
            by_name.setdefault(name, []).append(value)
    values = {"readings": str(len(acc.readings))}
    for name, series in by_name.items():
        values[f"{name}:count"] = str(len(series))
        values[f"{name}:min"] = encode(min(series), Encoding.TEXT).decode()
        values[f"{name}:max"] = encode(max(series), Encoding.TEXT).decode()
        values[f"{name}:mean"] = encode(sum(series) / len(series), Encoding.TEXT).decode()
    return values


def rollup_row(
    kind: str, key: str, acc: Accumulator, start_micros: int, end_micros: int, update: int = 0
) -> RollupRow:
    """The row for one key and window from its accumulated value."""
    values = consent_values(acc) if isinstance(acc, ConsentAccumulator) else telemetry_values(acc)
    return RollupRow(
        kind=kind,
        key=key,
        window_start=EPOCH + timedelta(microseconds=start_micros),
        window_end=EPOCH + timedelta(microseconds=end_micros),
        values=values,
        update=update,
    )
