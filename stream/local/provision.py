"""Create (idempotently) the topics, subscriptions and tables a run needs: local tooling."""

import logging
from collections.abc import Iterable

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable import Client as BigtableAdminClient
from google.cloud.bigtable import column_family

from stream.pipeline.config import BigtableTarget
from stream.pipeline.tables import tables

_LOG = logging.getLogger(__name__)


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
    known = tables()
    for group in groups or known:
        spec = known[group]
        table = instance.table(target.table_id(group))
        if table.exists():
            continue
        table.create(
            column_families={fam: column_family.MaxVersionsGCRule(1) for fam in spec.families}
        )
        _LOG.info("created table %s (families %s)", table.table_id, ", ".join(spec.families))
