"""Where the pipeline's Python time goes: a py-spy sample of its process, bucketed."""

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def profile(pid: int, seconds: int, output: Path) -> dict[str, Any]:
    """py-spy the pipeline process; summarise where its Python time goes."""
    raw = output / "profile.txt"
    try:
        subprocess.run(  # noqa: S603 - py-spy from our venv
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"py-spy failed: {exc}"}
    return summarise_profile(raw.read_text())


# Buckets for "where the time goes", matched against the frames of each sample.
PROFILE_BUCKETS = (
    ("bigtable mutate_rows", ("bulk_mutate_rows",)),
    ("pubsub pull", ("PullMessagesFn._pull",)),
    ("pubsub acknowledge", ("AcknowledgeFn.finish_bundle",)),
    ("dead-letter publish", ("PublishDeadLettersFn",)),
    ("validation (pydantic)", ("validate (stream/pipeline/validate.py",)),
    ("row building", ("mutation_entry",)),
    ("rollups", ("stream/pipeline/rollups/",)),
    ("beam data plane / coders", ("data_plane", "coder_impl", "encode", "decode")),
    ("idle / waiting", ("wait (threading", "_wait_once", "select", "poll")),
)


def summarise_profile(collapsed: str) -> dict[str, Any]:
    """Share of samples per bucket (first matching bucket wins), from py-spy raw output."""
    totals: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        bucket = next(
            (name for name, keys in PROFILE_BUCKETS if any(k in stack for k in keys)), "other"
        )
        totals[bucket] += count
    share = {name: round(100 * n / samples, 1) for name, n in totals.most_common()}
    return {"samples": samples, "percent_of_samples": share}
