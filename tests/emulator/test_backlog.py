"""A backlog published before the pipeline starts is written completely.

The measured trap (ARCHITECTURE.md): with event-time windows before the write, a backlog
is "late" against the DirectRunner's wall-clock watermark and 77% of it was dropped
silently. Raw rows here never wait for a window, so every message must arrive, on both
local runners, however old its event time (within --max_event_age_seconds).
"""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from loadgen.readback import pull_letters, table_rows
from tests.helpers.builders import consent_body, encoded
from tests.helpers.load import publish, wait_for
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

WINDOW = timedelta(seconds=60)
LATENESS = timedelta(hours=1)  # the defaults


def _backlog(count: int) -> dict[str, tuple[bytes, datetime]]:
    """Message body's user -> (body, event time): times over the last two hours, shuffled."""
    now = datetime.now(UTC)
    messages = {}
    for i in range(count):
        when = now - timedelta(seconds=(i * 7919) % 7200, milliseconds=i % 1000)
        body = consent_body(domain=f"d{i % 50}.example.com", when=when)
        messages[body["user"]] = (encoded(body), when)
    return messages


def _window_expired_by(when: datetime, moment: datetime) -> bool:
    """Whether the event's rollup window had expired (end + allowed lateness) by `moment`."""
    end = datetime.fromtimestamp(when.timestamp() // 60 * 60, tz=UTC) + WINDOW
    return end + LATENESS <= moment


@pytest.mark.parametrize(
    ("runner", "rollups", "count"),
    [
        ("default", "on", 5000),
        ("default", "off", 5000),
        ("BundleBasedDirectRunner", "on", 800),
    ],
)
def test_backlog_is_written_completely(
    resources: TestResources, log_dir: Path, runner: str, rollups: str, count: int
) -> None:
    backlog = _backlog(count)
    publish(resources.topic, [(data, {}) for data, _ in backlog.values()])
    flags = [f"--rollups={rollups}"] + ([] if runner == "default" else [f"--runner={runner}"])
    pipeline = PipelineProcess(resources.flags(*flags), log_dir / "pipeline.log")
    table = resources.table("consent")
    try:
        arrived = wait_for(lambda: table_rows(PROJECT, resources.instance, table) >= count, 180)
        assert arrived, pipeline.log()[-3000:]
        time.sleep(2)  # let a straggling dead letter of the last bundle be published
    finally:
        pipeline.stop()
    ended = datetime.now(UTC)
    assert table_rows(PROJECT, resources.instance, table) == count
    left = pull_letters(resources.subscription, timeout=10, quiet=3)
    assert left == [], f"{len(left)} messages were never acknowledged"
    letters = pull_letters(resources.dead_letter_subscription, timeout=10, quiet=3)
    if rollups == "off":
        assert letters == []  # nothing to say about any message: every one is its row
        return
    # With rollups on, the only dead letters are notices for events whose window had
    # expired: their rows are stored and the aggregates exclude them, which is said, not
    # dropped. How many depends on the runner's watermark (the DirectRunner's is wall-clock
    # now; Prism's follows the backlog's publish times), so each notice is checked: too_late,
    # at most one per message, and only for a message whose window had expired by the end.
    users = [json.loads(letter.data)["user"] for letter in letters]
    assert len(set(users)) == len(users)
    for letter, user in zip(letters, users, strict=True):
        assert (letter.attributes["deadletter_kind"], letter.attributes["deadletter_stage"]) == (
            "too_late",
            "rollup",
        )
        data, when = backlog[user]
        assert letter.data == data
        assert _window_expired_by(when, ended), (user, when)
