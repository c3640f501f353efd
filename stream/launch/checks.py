"""Start-up checks: the tables, families and subscription a run needs, or what to change."""

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable import Client as BigtableAdminClient

from stream.pipeline.config import BigtableTarget, IngestConfig, required_ack_deadline
from stream.pipeline.tables import tables


class ResourceError(RuntimeError):
    """A resource is missing or misconfigured; the message says what to change."""


def check_tables(target: BigtableTarget) -> None:
    """Fail fast when a table or a column family the schemas write to is missing."""
    client = BigtableAdminClient(project=target.project, admin=True)
    instance = client.instance(target.instance)
    problems = []
    for group, spec in tables().items():
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
            f"{current.ack_deadline_seconds}s; it needs at least {need}s so that one write "
            "attempt and one dead-letter publish fit in it (2 x --write_timeout_seconds + 10; "
            "longer holds are extended by the lease keeper). Raise it: "
            f"gcloud pubsub subscriptions update {subscription} --ack-deadline={need}, "
            "or lower --write_timeout_seconds"
        )
