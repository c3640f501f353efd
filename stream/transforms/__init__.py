"""One composite PTransform per pipeline stage."""
