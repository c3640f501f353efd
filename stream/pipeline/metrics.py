"""Beam Metrics counters for every path a message can take (one namespace, stable names)."""

from apache_beam.metrics import Metrics

NAMESPACE = "stream"

READ = "read"
VALID = "valid"
INVALID = "invalid"
WRITTEN = "written"
WRITE_REJECTED = "write_rejected"
WRITE_RETRYABLE_FAILURES = "write_retryable_failures"
DEAD_LETTERED = "dead_lettered"
ACKED = "acked"
ACK_FAILED = "ack_failed"

STATUS_COUNTERS = (READ, VALID, INVALID, WRITTEN, DEAD_LETTERED, ACKED)


def counter(name: str) -> Metrics.DelegatingCounter:
    """A counter in the pipeline's namespace."""
    return Metrics.counter(NAMESPACE, name)
