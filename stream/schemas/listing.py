"""What each registered schema is and where its events land, as a table or as JSON."""

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.base import MappedEvent
from schemas.registry import ENTRY_POINT_GROUP, Registry, SchemaPluginError, registry

EXIT_OK, EXIT_PLUGIN_ERROR = 0, 2


def row_key_shape(model: type[MappedEvent]) -> str:
    """The model's `row_key_shape`, else the first line of its `row_key` docstring."""
    if model.row_key_shape:
        return model.row_key_shape
    doc = (model.row_key.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(undocumented)"


def describe(found: Registry) -> list[dict[str, Any]]:
    """One record per schema, sorted by name."""
    records = []
    for name, model in sorted(found.schemas.items()):
        table = model.table
        records.append(
            {
                "schema": name,
                "package": found.packages[name],
                "model": f"{model.__module__}.{model.__qualname__}",
                "table_group": table.group,
                "table_flag": f"--{table.group}_table",
                "default_table_id": table.default_table_id,
                "row_key": row_key_shape(model),
                "families": list(table.families),
                "cells": [
                    {"column": f"{c.family}:{c.qualifier}", "encoding": str(c.encoding)}
                    for c in model.columns
                ],
                "dynamic_cells": list(model.dynamic_cells),
                "example_traffic": model.offers_example(),
            }
        )
    return records


def _table(records: list[dict[str, Any]]) -> Table:
    table = Table(title=f"schemas (built-in and entry points of {ENTRY_POINT_GROUP})")
    for heading in ("schema", "package", "table (flag)", "row key", "families", "cells"):
        table.add_column(heading, overflow="fold")
    for r in records:
        table.add_row(
            r["schema"],
            r["package"],
            f"{r['default_table_id']} ({r['table_flag']})",
            r["row_key"],
            ", ".join(r["families"]),
            "\n".join(
                [f"{c['column']} ({c['encoding']})" for c in r["cells"]] + r["dynamic_cells"]
            ),
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """List the schemas; exit 2 (with the fix) when an installed plugin cannot be used."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.schemas",
        description="List every message type the pipeline accepts: built-in ones and those "
        f"installed packages register as entry points of {ENTRY_POINT_GROUP}.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    try:
        records = describe(registry())
    except SchemaPluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PLUGIN_ERROR
    if args.json:
        print(json.dumps({"schemas": records}, indent=2))
    else:
        Console(width=160).print(_table(records))
    return EXIT_OK
