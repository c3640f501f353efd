"""Per-window aggregates: facts, windows, per-bundle pre-aggregation, keyed accumulation, rows."""

from stream.pipeline.monitoring_ids import separate_short_ids

# Imported in every worker that runs a rollup stage, before its first bundle.
separate_short_ids()
