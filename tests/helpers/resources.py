"""Per-test Pub/Sub topics/subscriptions and a Bigtable instance with fresh tables."""

import uuid
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions

from stream.launch.options import to_config
from stream.local.provision import ensure_pubsub, ensure_tables
from stream.names import subscription_path, topic_path
from stream.pipeline.config import IngestConfig
from stream.pipeline.tables import tables

PROJECT = "test-project"


@dataclass(frozen=True)
class TestResources:
    """Names of everything one test uses; nothing is shared between tests."""

    __test__ = False  # not a test class, despite the name

    suffix: str
    ack_deadline: int = 60
    extra_flags: tuple[str, ...] = field(default=())

    @property
    def topic(self) -> str:
        return topic_path(PROJECT, f"in-{self.suffix}")

    @property
    def subscription(self) -> str:
        return subscription_path(PROJECT, f"in-{self.suffix}-sub")

    @property
    def dead_letter_topic(self) -> str:
        return topic_path(PROJECT, f"dlq-{self.suffix}")

    @property
    def dead_letter_subscription(self) -> str:
        return subscription_path(PROJECT, f"dlq-{self.suffix}-sub")

    @property
    def instance(self) -> str:
        return f"inst-{self.suffix}"

    def table(self, group: str) -> str:
        return f"{tables()[group].default_table_id}-{self.suffix}"

    def flags(self, *extra: str, streaming: bool = True) -> list[str]:
        """Command-line flags pointing the pipeline at these resources."""
        flags = [
            *(["--streaming"] if streaming else []),
            f"--subscription={self.subscription}",
            f"--dead_letter_topic={self.dead_letter_topic}",
            f"--bigtable_project={PROJECT}",
            f"--bigtable_instance={self.instance}",
            "--emulators=off",
            "--write_timeout_seconds=20",
            "--status_interval_seconds=2",
        ]
        flags += [f"--{group}_table={self.table(group)}" for group in tables()]
        return flags + list(self.extra_flags) + list(extra)

    def config(self, *extra: str) -> IngestConfig:
        return to_config(PipelineOptions(self.flags(*extra)))

    def create(self) -> "TestResources":
        """Create topics, subscriptions (ack deadline `ack_deadline`) and tables."""
        ensure_pubsub(
            topic=self.topic,
            subscription=self.subscription,
            dead_letter_topic=self.dead_letter_topic,
            dead_letter_subscription=self.dead_letter_subscription,
            ack_deadline=self.ack_deadline,
        )
        ensure_tables(self.config().bigtable)
        return self


def new_resources(ack_deadline: int = 60) -> TestResources:
    """Fresh, uniquely named resources, created on the emulators."""
    return TestResources(suffix=uuid.uuid4().hex[:10], ack_deadline=ack_deadline).create()
