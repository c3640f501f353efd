"""A backlog published before the pipeline starts is written completely.

The measured trap (ARCHITECTURE.md): with event-time windows before the write, a backlog
is "late" against the DirectRunner's wall-clock watermark and 77% of it was dropped
silently. Raw rows here never wait for a window, so every message must arrive, on both
local runners, however old its event time (within --max_event_age_seconds).
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from loadgen.process import PipelineProcess
from tests.helpers.readback import count_rows, publish, pull_all, wait_for
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def _backlog(count: int) -> list[tuple[bytes, dict[str, str]]]:
    now = datetime.now(UTC)
    messages: list[tuple[bytes, dict[str, str]]] = []
    for i in range(count):
        # Event times spread over the last two hours, in shuffled order.
        when = now - timedelta(seconds=(i * 7919) % 7200, milliseconds=i % 1000)
        body = {
            "user": str(uuid.uuid4()),
            "domain": f"d{i % 50}.example.com",
            "services": ["essential-1"],
            "message_timestamp": when.isoformat(),
        }
        messages.append((json.dumps(body).encode(), {}))
    return messages


def _undelivered(subscription: str) -> int:
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100}, timeout=3
            )
        except Exception:
            return 0
        return len(response.received_messages)


@pytest.mark.parametrize(("runner", "count"), [("default", 5000), ("BundleBasedDirectRunner", 800)])
def test_backlog_is_written_completely(
    resources: TestResources, log_dir: Path, runner: str, count: int
) -> None:
    publish(resources.topic, _backlog(count))
    flags = [] if runner == "default" else [f"--runner={runner}"]
    pipeline = PipelineProcess(resources.flags(*flags), log_dir / "pipeline.log")
    table = resources.table("consent")
    try:
        arrived = wait_for(
            lambda: count_rows(PROJECT, resources.instance, table) >= count, timeout=180
        )
        assert arrived, pipeline.log()[-3000:]
    finally:
        pipeline.stop()
    assert count_rows(PROJECT, resources.instance, table) == count
    assert _undelivered(resources.subscription) == 0
    # Every row is written. The only dead letters can be the rollups' notices for events
    # more than the allowed lateness (1 h) behind what the lateness gate has seen expire:
    # their rows are stored, the aggregates exclude them, and that is said, not dropped.
    # (How many depends on the runner's watermark: the DirectRunner's is wall-clock now;
    # on Prism a backlog's old events reach the gate before its timers fire and are
    # aggregated, since the pending timers hold the watermark for them.)
    letters = pull_all(resources.dead_letter_subscription, expected=count, timeout=5)
    assert {
        (x.attributes["deadletter_kind"], x.attributes["deadletter_stage"]) for x in letters
    } <= {("too_late", "rollup")}
    assert len(letters) < count
