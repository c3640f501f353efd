"""Message attribute value (e.g. `schema=consent.v1`) -> the model that validates it."""

from schemas.base import MappedEvent, TableSpec
from schemas.consent import CONSENT_TABLE, ConsentV1, ConsentV2
from schemas.telemetry import TELEMETRY_TABLE, TelemetryV1

SCHEMA_ATTRIBUTE = "schema"  # the message attribute naming the schema (--schema_attribute)
DEFAULT_SCHEMA = ConsentV1.schema_name  # for messages without it (--default_schema)

SCHEMAS: dict[str, type[MappedEvent]] = {
    model.schema_name: model for model in (ConsentV1, ConsentV2, TelemetryV1)
}

# Where events land (one row per event); stream/pipeline/tables.py adds the rollups' table.
EVENT_TABLES: dict[str, TableSpec] = {spec.group: spec for spec in (CONSENT_TABLE, TELEMETRY_TABLE)}
