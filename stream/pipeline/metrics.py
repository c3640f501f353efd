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
WRITE_REFUSED = "write_refused"
PULL_FAILURES = "pull_failures"
LEASES_HELD = "leases_held"  # gauge: messages this process holds, at each pull
# Messages pulled again while this process still held them (their lease ran out): the
# lease keeper's failure signal, 0 when leases follow the work.
REDELIVERED_WHILE_HELD = "redelivered_while_held"

# Time spent backing off, in whole seconds. The exact name Beam's own GCP I/Os use and
# Dataflow's autoscaler reads (it does not add workers for a throttled sink). Like them
# (BigQueryWriteFn, DatastoreMutateFn, ...) the counter's namespace is the DoFn class that
# backs off, not NAMESPACE: the runner keys on the name alone.
THROTTLING_SECONDS = "cumulativeThrottlingSeconds"

STATUS_COUNTERS = (READ, VALID, INVALID, WRITTEN, DEAD_LETTERED, ACKED)


def counter(name: str) -> Metrics.DelegatingCounter:
    """A counter in the pipeline's namespace."""
    return Metrics.counter(NAMESPACE, name)
