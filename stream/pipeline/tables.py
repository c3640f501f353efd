"""Every table the pipeline writes: one per event group, and the rollups."""

from schemas.base import TableSpec
from schemas.registry import event_tables
from stream.pipeline.rollups.rows import ROLLUP_TABLE


def tables() -> dict[str, TableSpec]:
    """Table group -> spec: the event tables of every registered schema, then the rollups'."""
    return {**event_tables(), ROLLUP_TABLE.group: ROLLUP_TABLE}
