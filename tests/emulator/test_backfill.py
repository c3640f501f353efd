"""Batch backfill from JSON-lines files: the same transforms, idempotent when replayed."""

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loadgen.readback import pull_letters, read_table
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def _archive(directory: Path) -> tuple[list[str], int]:
    """Two files in the seed's format, a year old, with a few bad lines among them."""
    keys: list[str] = []
    bad = 0
    old = datetime.now(UTC) - timedelta(days=400)
    for part in range(2):
        lines = []
        for i in range(150):
            user = str(uuid.uuid4())
            when = old + timedelta(minutes=part * 1000 + i, milliseconds=i)
            body = {
                "user": user,
                "domain": f"shop{i % 7}.example.com",
                "services": ["essential-1", f"marketing-{1 + i % 5}"],
                "message_timestamp": when.isoformat(),
            }
            lines.append(json.dumps(body))
            keys.append(f"shop{i % 7}.example.com#{user}")
            if i % 50 == 0:
                lines.append('{"user": "not-a-uuid"}')
                bad += 1
        lines.append("")  # blank lines are not messages
        (directory / f"requests-{part}.jsonl").write_text("\n".join(lines) + "\n")
    return keys, bad


def _backfill(resources: TestResources, pattern: str) -> None:
    flags = resources.flags(f"--input={pattern}", "--status_interval_seconds=0", streaming=False)
    done = subprocess.run(
        [sys.executable, "-m", "stream.main", *flags], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_backfill_twice_leaves_the_same_table(resources: TestResources, tmp_path: Path) -> None:
    keys, bad = _archive(tmp_path)
    pattern = str(tmp_path / "requests-*.jsonl")

    _backfill(resources, pattern)
    first = read_table(PROJECT, resources.instance, resources.table("consent"))
    letters = pull_letters(resources.dead_letter_subscription, expected=bad, timeout=30)

    _backfill(resources, pattern)
    second = read_table(PROJECT, resources.instance, resources.table("consent"))

    assert sorted(first) == sorted(keys)  # year-old events: no age limit in a backfill
    assert second == first  # replayed: the same cells, still one version each
    assert all(len(versions) == 1 for row in second.values() for versions in row.values())
    assert len(letters) == bad
    for letter in letters:
        assert letter.attributes["deadletter_kind"] == "missing_field"
        assert letter.attributes["source_file"].startswith(str(tmp_path))
        assert letter.attributes["deadletter_message_id"].endswith(
            ":" + letter.attributes["source_line"]
        )
    # Rollups are off by default in a backfill: nothing was aggregated.
    assert read_table(PROJECT, resources.instance, resources.table("rollup")) == {}
