"""Every table the pipeline writes: one per event group, and the rollups."""

from schemas.base import TableSpec
from schemas.registry import EVENT_TABLES
from stream.pipeline.rollups.rows import ROLLUP_TABLE

TABLES: dict[str, TableSpec] = {**EVENT_TABLES, ROLLUP_TABLE.group: ROLLUP_TABLE}
