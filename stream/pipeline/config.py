"""Frozen, picklable settings that transforms and DoFns receive (built from the flags)."""

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from schemas.registry import DEFAULT_SCHEMA
from stream.pipeline.validate import ParseRules

# How long a batch of rows or dead letters backs off in place on transient errors before its
# bundle fails (--write_retry_seconds).
DEFAULT_WRITE_RETRY = timedelta(minutes=15)


# Any resource hint gives transforms an environment of their own, and on Prism a worker
# process for it (stream/launch/patches.py, worker_process); Prism ignores the value.
WORKER_PROCESS_HINTS = {"min_ram": "1GB"}


class RollupWorker(StrEnum):
    """Where the keyed rollup stages run (--rollup_worker, resolved for the runner)."""

    THREAD = "thread"  # in the SDK worker of the rows
    PROCESS = "process"  # Prism: an SDK worker process of their own (stream/launch/patches.py)


@dataclass(frozen=True, slots=True)
class BigtableTarget:
    """Where and how rows are written."""

    project: str
    instance: str
    # logical table group (stream.pipeline.tables.tables()) -> table id
    tables: dict[str, str] = field(default_factory=dict)
    batch_rows: int = 500
    timeout: timedelta = timedelta(seconds=60)  # one MutateRows attempt
    record_ingest_time: bool = False
    retry: timedelta = DEFAULT_WRITE_RETRY
    # MutateRows entries built as raw protobuf (stream/pipeline/io/client_patches.py).
    raw_entries: bool = True

    def table_id(self, group: str) -> str:
        """The table id for a logical table group."""
        return self.tables[group]


@dataclass(frozen=True, slots=True)
class PubSubEndpoints:
    """The input subscription, the dead-letter topic and how the pull source reads."""

    subscription: str
    dead_letter_topic: str
    pull_max_messages: int = 1000
    pull_fill: timedelta = timedelta(milliseconds=500)  # a partial batch's longest wait
    readers: int = 2
    # The pull source extends the lease of a message it holds up to this long after the pull.
    max_lease: timedelta = timedelta(hours=1)
    id_label: str | None = None
    timestamp_attribute: str | None = None

    @property
    def project(self) -> str:
        """The project of the input subscription."""
        return self.subscription.split("/")[1]


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """All settings of one pipeline run, validated."""

    pubsub: PubSubEndpoints
    bigtable: BigtableTarget
    rules: ParseRules = field(default_factory=ParseRules)
    rollups: bool = True
    rollup_worker: RollupWorker = RollupWorker.THREAD
    # Processes that pull, validate, write and acknowledge: 1, or 2 on Prism (the second is
    # the worker process, beside the keyed rollup stages).
    ingest_processes: int = 1
    patches: bool = True  # --patches: stream/launch/patches.py and io/client_patches.py
    input_pattern: str | None = None  # a batch backfill from files instead of Pub/Sub
    input_schema: str = DEFAULT_SCHEMA
    window: timedelta = timedelta(seconds=60)
    allowed_lateness: timedelta = timedelta(hours=1)
    status_interval: timedelta = timedelta(seconds=5)
    max_restarts: int = 5


def required_ack_deadline(config: IngestConfig) -> int:
    """The shortest ack deadline the pull source's subscription may have.

    One write attempt (bounded by the write timeout) and, for failures, the dead-letter
    publish (bounded the same way), plus processing slack. Holding a message longer (a
    write backing off) is covered by the lease keeper (stream/pipeline/io/leases.py), which
    extends the deadline before it runs out, up to `max_lease`.
    """
    return int(2 * config.bigtable.timeout.total_seconds()) + 10
