"""A run's own resources on the emulators: topic, subscription, dead letters, instance, tables."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.verify import Targets
from schemas.registry import event_tables
from stream import names
from stream.local.provision import ensure_pubsub, ensure_tables
from stream.pipeline.config import BigtableTarget
from stream.pipeline.tables import tables as all_tables

PROJECT = names.LOCAL_PROJECT


@dataclass(frozen=True)
class LoadTarget:
    """Where one run publishes, what the pipeline reads and writes, and its flags."""

    tag: str
    topic: str
    subscription: str
    instance: str
    tables: dict[str, str]  # group -> table id, the rollup table included
    targets: Targets  # what the verifier reads: the event tables and the dead letters
    flags: list[str]


def new_target(tag: str, extra_flags: Sequence[str] = (), ack_deadline: int = 130) -> LoadTarget:
    """Fresh, uniquely named resources, created; the pipeline flags that point at them."""
    name = f"{tag}-{uuid.uuid4().hex[:6]}"
    topic = names.topic_path(PROJECT, name)
    subscription = names.subscription_path(PROJECT, f"{name}-sub")
    dead_topic = names.topic_path(PROJECT, f"{name}-dlq")
    dead_subscription = names.subscription_path(PROJECT, f"{name}-dlq-sub")
    instance = name
    tables = {group: spec.default_table_id for group, spec in all_tables().items()}
    ensure_pubsub(topic, subscription, dead_topic, dead_subscription, ack_deadline=ack_deadline)
    ensure_tables(BigtableTarget(project=PROJECT, instance=instance, tables=tables))
    flags = [
        "--streaming",
        f"--subscription={subscription}",
        f"--dead_letter_topic={dead_topic}",
        f"--bigtable_project={PROJECT}",
        f"--bigtable_instance={instance}",
        "--emulators=off",
        "--status_interval_seconds=2",
        *extra_flags,
    ]
    # The verifier judges event tables only (rollup rows are aggregates nobody sent).
    judged = {group: tables[group] for group in event_tables()}
    targets = Targets(PROJECT, instance, judged, dead_subscription)
    return LoadTarget(tag, topic, subscription, instance, tables, targets, flags)
