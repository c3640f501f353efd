"""The bench's own traffic: seed-shaped consent events, a topic per phase, rows counted back.

Each phase writes under its own key prefix (`<phase>-<n>.bench.example.com#...`, five domains
like the seed's), so its rows can be counted and timed without reading the others'.
"""

import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient

from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.readback import count_rows, rows
from loadgen.report import Progress
from loadgen.seed import SEED_DOMAINS, endpoint_timestamp, seed_request
from loadgen.traffic import Planned, planned_row
from stream import names
from stream.local.provision import ensure_subscription, ensure_topic
from stream.pipeline.io.batch_writer import INGESTED_AT

TABLE = "scale-traffic"
INGESTED = INGESTED_AT.decode()


def phase_topic(name: str) -> tuple[str, list[str]]:
    """A topic and subscription of its own for one phase, and the pipeline flags to use it.

    Phases must not share a subscription: messages a stopped pipeline had pulled (or a pull
    still pending when it died) stay leased until the ack deadline, and would stall the next
    phase by that long.
    """
    topic = names.topic_path(names.LOCAL_PROJECT, f"bench-{name}")
    subscription = names.subscription_path(names.LOCAL_PROJECT, f"bench-{name}-sub")
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        ensure_topic(publisher, topic)
        ensure_subscription(subscriber, subscription, topic, 130)
    return topic, [f"--subscription={subscription}"]


def prefix(phase: str) -> str:
    """The key prefix of every row a phase writes."""
    return f"{phase}-"


def messages(phase: str) -> Iterator[Planned]:
    """Seed-shaped consent.v1 events (unique users, five domains), stamped when generated."""
    rng = random.Random(phase)  # noqa: S311 - traffic, not cryptography
    domains = [f"{prefix(phase)}{i}.bench.example.com" for i in range(len(SEED_DOMAINS))]
    while True:
        request = seed_request(rng)
        request["domain"] = rng.choice(domains)
        request["message_timestamp"] = endpoint_timestamp(datetime.now(UTC))
        yield planned_row("consent.v1", request)


def publish(
    topic: str, phase: str, rate: float, count: int | None, seconds: float | None
) -> tuple[int, float]:
    """Publish the phase's traffic; (messages sent, seconds taken)."""
    progress = Progress(rate, count, seconds)
    started = time.monotonic()
    stats = Publisher(topic, None, rate).run(messages(phase), progress, count, seconds)
    progress.finish(stats)
    return stats.sent, time.monotonic() - started


def ingest_stamps(
    client: BigtableDataClient, phase: str, instance: str = names.LOCAL_INSTANCE
) -> list[tuple[int, int]]:
    """(event time ms, ingested ms) of every row the phase wrote."""
    result = []
    for _, versions in rows(client, instance, TABLE, prefix=prefix(phase)):
        ingested = [(ts, value) for _, qualifier, ts, value in versions if qualifier == INGESTED]
        if ingested:
            result.append((ingested[0][0] // 1000, int(ingested[0][1])))
    return result


def phase_rows(client: BigtableDataClient, phase: str, instance: str = names.LOCAL_INSTANCE) -> int:
    """Rows the phase wrote so far."""
    return count_rows(client, instance, TABLE, prefix=prefix(phase))


class WrittenHint:
    """The pipeline's own `written=N` status counter: a cheap "probably done" signal.

    Scanning the table every second to see progress costs the load generator a sizeable
    share of a core, which the pipeline then lacks; the status line costs nothing.
    """

    def __init__(self, pipeline: PipelineProcess | None) -> None:
        self._pipeline = pipeline
        self.value = 0

    def update(self) -> int:
        """The latest `written=` value the pipeline printed."""
        if self._pipeline is not None:
            for line in self._pipeline.new_lines("status:"):
                match = re.search(r"written=(\d+)", line)
                if match:
                    self.value = int(match.group(1))
        return self.value


def wait_rows(
    client: BigtableDataClient,
    phase: str,
    expected: int,
    timeout: float,
    hint: WrittenHint | None = None,
) -> int:
    """Wait until `expected` rows of the phase exist; the number found.

    Scans only when the hint says so, or when the hint stopped moving for 15 s (Prism's
    counters can lag): a scan reads every row so far, and scanning a 200,000-row prefix
    every 10 s cost this process 0.76 of a core that the pipeline then lacked.
    """
    deadline = time.monotonic() + timeout
    base = hint.update() if hint else 0
    last_change, last_seen, last_scan = time.monotonic(), base, 0.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = time.monotonic()
        seen = hint.update() if hint else last_seen
        if seen != last_seen:
            last_change, last_seen = now, seen
        hinted = hint is None or seen - base >= expected
        stalled = now - max(last_change, last_scan) >= 15
        if (hinted and now - last_scan >= 3) or stalled:
            last_scan = now
            if phase_rows(client, phase) >= expected:
                break
    return phase_rows(client, phase)
