"""MutateRows entries: what can be written (Row) and its entry, cells at the row's timestamp."""

from typing import Protocol

from google.cloud.bigtable.data import RowMutationEntry, SetCell

from schemas.base import Cell, TableSpec
from stream.pipeline.io.client_patches import RawSetCellsEntry

INGESTED_AT = b"ingested_at"


class Row(Protocol):
    """What can be written: a validated event (MappedEvent) or an aggregate (RollupRow)."""

    @property
    def table(self) -> TableSpec: ...

    def row_key(self) -> str: ...

    def cells(self) -> tuple[Cell, ...]: ...

    def timestamp_micros(self) -> int: ...


def mutation_entry(
    row: Row, ingest_micros: int | None = None, raw: bool = True
) -> RowMutationEntry:
    """A fresh MutateRows entry for one row: every cell at the row's timestamp.

    `raw`: its request proto built directly (stream/pipeline/io/client_patches.py).
    """
    ts = row.timestamp_micros()
    cells = row.cells()
    mutations = [SetCell(c.family, c.qualifier, c.value, timestamp_micros=ts) for c in cells]
    if ingest_micros is not None:
        # Same cell timestamp as the event: a rewrite replaces it instead of adding a version.
        mutations.append(
            SetCell(cells[0].family, INGESTED_AT, str(ingest_micros // 1000).encode(), ts)
        )
    entry = RawSetCellsEntry if raw else RowMutationEntry
    return entry(row.row_key().encode(), mutations)
