"""Message attribute value (e.g. `schema=consent.v1`) -> the model that validates it."""

from schemas.base import MappedEvent, TableSpec
from schemas.consent import CONSENT_TABLE, ConsentV1, ConsentV2
from schemas.rollup import ROLLUP_TABLE
from schemas.telemetry import TELEMETRY_TABLE, TelemetryV1

SCHEMA_ATTRIBUTE = "schema"
DEFAULT_SCHEMA = "consent.v1"

SCHEMAS: dict[str, type[MappedEvent]] = {
    model.schema_name: model for model in (ConsentV1, ConsentV2, TelemetryV1)
}

# Where events land (one row per event) ...
EVENT_TABLES: dict[str, TableSpec] = {spec.group: spec for spec in (CONSENT_TABLE, TELEMETRY_TABLE)}
# ... and every table the pipeline writes, with the per-window aggregates.
TABLES: dict[str, TableSpec] = {**EVENT_TABLES, ROLLUP_TABLE.group: ROLLUP_TABLE}


def lookup(name: str) -> type[MappedEvent] | None:
    """The model registered under `name`, or None."""
    return SCHEMAS.get(name)
