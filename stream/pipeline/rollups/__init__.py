"""Per-window aggregates: facts, accumulators, the lateness gate, accumulation, the transform."""
