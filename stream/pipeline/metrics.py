"""Beam Metrics for every path a message can take: one namespace, every name a constant here."""

from apache_beam.metrics import Metrics

from stream.pipeline.messages import ErrorKind

NAMESPACE = "stream"

# Counters: what each message did.
READ = "read"
VALID = "valid"
INVALID = "invalid"  # and `invalid_<kind>` per ErrorKind
WRITTEN = "written"
WRITE_REJECTED = "write_rejected"
WRITE_RETRYABLE_FAILURES = "write_retryable_failures"
WRITE_REFUSED = "write_refused"
WRITE_RETRIED_ROWS = "write_retried_rows"
WRITE_BATCHES = "write_batches"
DEAD_LETTERED = "dead_lettered"  # and `dead_lettered_<kind>` per ErrorKind
ACKED = "acked"
ACK_FAILED = "ack_failed"
PULLED = "pulled"
EMPTY_PULLS = "empty_pulls"
PULL_FAILURES = "pull_failures"
# Messages pulled again while this process still held them (their lease ran out): the
# lease keeper's failure signal, 0 when leases follow the work.
REDELIVERED_WHILE_HELD = "redelivered_while_held"
# Time the row writers slept backing off, in milliseconds (each sleep rounded up): exact where
# THROTTLING_SECONDS below counts whole seconds only.
WRITE_THROTTLED_MS = "write_throttled_ms"
ROLLUP_ROWS_WRITTEN = "rollup_rows_written"
ROLLUP_PANES = "rollup_panes"
ROLLUP_TOO_LATE = "rollup_too_late"

# Gauges.
LEASES_HELD = "leases_held"  # messages this process holds, at each pull
SOURCE_LAG_MS = "source_lag_ms"  # now - the oldest publish time of the last batch
PULL_FILL_PERCENT = "pull_fill_percent"  # the last batch's share of --pull_max_messages

# Distributions.
WRITE_BATCH_MS = "write_batch_ms"
ROLLUP_STATE_BYTES_PER_EVENT = "rollup_state_bytes_per_event"

# Time spent backing off, in whole seconds. The exact name Beam's own GCP I/Os use and
# Dataflow's autoscaler reads (it does not add workers for a throttled sink). Like them
# (BigQueryWriteFn, DatastoreMutateFn, ...) the counter's namespace is the DoFn class that
# backs off, not NAMESPACE: the runner keys on the name alone.
THROTTLING_SECONDS = "cumulativeThrottlingSeconds"


def counter(name: str) -> Metrics.DelegatingCounter:
    """A counter in the pipeline's namespace."""
    return Metrics.counter(NAMESPACE, name)


def counters_by_kind(prefix: str) -> dict[ErrorKind, Metrics.DelegatingCounter]:
    """`<prefix>_<kind>` for every ErrorKind: made once per DoFn, not once per element."""
    return {kind: counter(f"{prefix}_{kind}") for kind in ErrorKind}


def gauge(name: str) -> Metrics.DelegatingGauge:
    """A gauge in the pipeline's namespace."""
    return Metrics.gauge(NAMESPACE, name)


def distribution(name: str) -> Metrics.DelegatingDistribution:
    """A distribution in the pipeline's namespace."""
    return Metrics.distribution(NAMESPACE, name)
