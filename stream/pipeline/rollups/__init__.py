"""Per-window aggregates: facts, windows, per-bundle pre-aggregation, keyed accumulation, rows."""
