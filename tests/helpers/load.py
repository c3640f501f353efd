"""Drive a test's traffic: publish messages (or a load with a ledger), wait, verify."""

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from google.cloud import pubsub_v1

from loadgen.ledger import Ledger
from loadgen.publish import Publisher
from loadgen.report import Progress, PublishStats
from loadgen.traffic import Replay, TrafficGenerator, TrafficOptions, from_file
from loadgen.verify import Targets, Verdict, verify
from schemas.registry import event_tables
from tests.helpers.resources import PROJECT, TestResources

MIXED = TrafficOptions(
    seed=7, invalid_ratio=0.08, duplicate_ratio=0.05, late_ratio=0.2, users=500, devices=50
)


def targets(resources: TestResources) -> Targets:
    """Where the pipeline under test writes."""
    return Targets(
        project=PROJECT,
        instance=resources.instance,
        tables={group: resources.table(group) for group in event_tables()},
        dead_letter_subscription=resources.dead_letter_subscription,
    )


def publish_load(
    resources: TestResources,
    ledger_path: Path,
    count: int,
    rate: float,
    options: TrafficOptions = MIXED,
) -> PublishStats:
    """Publish `count` generated messages at `rate`, recorded in the ledger."""
    with Ledger(ledger_path) as ledger:
        progress = Progress(rate, count, None)
        stats = Publisher(resources.topic, ledger, rate).run(
            iter(TrafficGenerator(options)), progress, count=count
        )
        progress.finish(stats)
    return stats


def replay_file(
    resources: TestResources, ledger_path: Path, path: Path, replay: Replay, rate: float
) -> PublishStats:
    """`loadgen publish --from-file`: every line of `path` at `rate`, recorded in the ledger."""
    with Ledger(ledger_path) as ledger:
        progress = Progress(rate, None, None)
        stats = Publisher(resources.topic, ledger, rate).run(from_file(path, replay), progress)
        progress.finish(stats)
    return stats


def verify_load(resources: TestResources, ledger_path: Path, timeout: float = 120) -> Verdict:
    """The verifier's verdict for the ledger against the test's table and dead letters."""
    with Ledger(ledger_path) as ledger:
        return verify(ledger, targets(resources), timeout=timeout, progress=False)


def publish(topic: str, messages: Iterable[tuple[bytes, dict[str, str]]]) -> list[str]:
    """Publish and wait for every message; returns the message ids in order."""
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
    )
    try:
        futures = [publisher.publish(topic, data, **attrs) for data, attrs in messages]
        return [future.result(timeout=60) for future in futures]
    finally:
        publisher.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
