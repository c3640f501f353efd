"""Create (idempotently) and check the topics, subscriptions and tables a run needs."""

import logging
from collections.abc import Iterable

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable import Client as BigtableAdminClient
from google.cloud.bigtable import column_family

from schemas.registry import TABLES
from stream.config import BigtableTarget, IngestConfig

_LOG = logging.getLogger(__name__)


class ResourceError(RuntimeError):
    """A resource is missing or misconfigured; the message says what to change."""


def required_ack_deadline(config: IngestConfig) -> int:
    """Seconds a message may be held between pull and ack by the pull source.

    One bundle holds a message through the row write (bounded by the write timeout) and,
    for failures, the dead-letter publish (bounded the same way), plus processing slack.
    """
    return int(2 * config.bigtable.timeout.total_seconds()) + 10


def ensure_topic(publisher: pubsub_v1.PublisherClient, topic: str) -> None:
    """Create the topic unless it exists."""
    try:
        publisher.create_topic(request={"name": topic})
        _LOG.info("created topic %s", topic)
    except gexc.AlreadyExists:
        pass


def ensure_subscription(
    subscriber: pubsub_v1.SubscriberClient, subscription: str, topic: str, ack_deadline: int
) -> None:
    """Create the subscription, or raise its ack deadline to at least `ack_deadline`."""
    try:
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline}
        )
        _LOG.info("created subscription %s (ack deadline %ss)", subscription, ack_deadline)
    except gexc.AlreadyExists:
        current = subscriber.get_subscription(request={"subscription": subscription})
        if current.ack_deadline_seconds < ack_deadline:
            subscriber.update_subscription(
                request={
                    "subscription": {"name": subscription, "ack_deadline_seconds": ack_deadline},
                    "update_mask": {"paths": ["ack_deadline_seconds"]},
                }
            )


def ensure_pubsub(
    topic: str,
    subscription: str,
    dead_letter_topic: str,
    dead_letter_subscription: str,
    ack_deadline: int,
) -> None:
    """Input topic + subscription, dead-letter topic + a subscription that keeps them."""
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        ensure_topic(publisher, topic)
        ensure_subscription(subscriber, subscription, topic, ack_deadline)
        ensure_topic(publisher, dead_letter_topic)
        ensure_subscription(subscriber, dead_letter_subscription, dead_letter_topic, 60)
    publisher.stop()


def ensure_tables(target: BigtableTarget, groups: Iterable[str] | None = None) -> None:
    """Create each table (families with GC rule max 1 version) unless it exists."""
    client = BigtableAdminClient(project=target.project, admin=True)
    instance = client.instance(target.instance)
    for group in groups or TABLES:
        spec = TABLES[group]
        table = instance.table(target.table_id(group))
        if table.exists():
            continue
        table.create(
            column_families={fam: column_family.MaxVersionsGCRule(1) for fam in spec.families}
        )
        _LOG.info("created table %s (families %s)", table.table_id, ", ".join(spec.families))


def check_tables(target: BigtableTarget) -> None:
    """Fail fast when a table or a column family the schemas write to is missing."""
    client = BigtableAdminClient(project=target.project, admin=True)
    instance = client.instance(target.instance)
    problems = []
    for group, spec in TABLES.items():
        table_id = target.table_id(group)
        try:
            families = set(instance.table(table_id).list_column_families())
        except gexc.NotFound:
            problems.append(
                f"table {table_id} ({group}) does not exist in instance {target.instance}"
            )
            continue
        missing = [fam for fam in spec.families if fam not in families]
        if missing:
            problems.append(f"table {table_id} lacks column families {', '.join(missing)}")
    if problems:
        raise ResourceError(
            "Bigtable is not ready for this pipeline:\n  "
            + "\n  ".join(problems)
            + "\n  create them (infra/terraform, or `cbt createtable` / `cbt createfamily`)"
        )


def check_subscription(config: IngestConfig) -> None:
    """Fail fast when the subscription is missing or its ack deadline is too short."""
    subscription = config.pubsub.subscription
    need = required_ack_deadline(config)
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            current = subscriber.get_subscription(request={"subscription": subscription})
        except gexc.NotFound:
            raise ResourceError(f"subscription {subscription} does not exist") from None
    if current.ack_deadline_seconds < need:
        raise ResourceError(
            f"subscription {subscription} has an ack deadline of "
            f"{current.ack_deadline_seconds}s, but this pipeline may hold a message up to "
            f"{need}s before acknowledging it (2 x --write_timeout_seconds + 10). Raise it: "
            f"gcloud pubsub subscriptions update {subscription} --ack-deadline={need}, "
            "or lower --write_timeout_seconds"
        )
