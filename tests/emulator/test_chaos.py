"""A 2-minute chaos soak, as `make chaos` runs it: its verdict is exact, its report honest.

`python -m loadgen chaos` starts its own emulators, both fault proxies and the pipeline. Seed
13's schedule: a SIGKILL of Prism, 20% of Bigtable entries RESOURCE_EXHAUSTED, every Pub/Sub
method failing with transient codes, a SIGKILL of the rollup worker (printed by the run).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.faults, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_a_two_minute_soak_loses_nothing_and_explains_every_rollup(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "chaos",
            "--minutes",
            "2",
            "--seed",
            "13",
            "--work-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    report = json.loads((tmp_path / "chaos.json").read_text())
    assert report["ok"] and report["verify_ok"]
    assert report["verify"].endswith("lost=0 duplicated=0 unexpected=0")
    assert report["sent"] > 10_000
    assert [line.split()[-1] for line in report["schedule"]] == [
        "kill_prism",
        "bigtable_overload",
        "pubsub_errors",
        "kill_rollup_worker",
    ]
    # Both kills were recovered by the launcher: the job restarted, the launcher never died.
    assert report["job_restarts"] >= 2 and report["user_restarts"] == 0
    rollups = report["rollups"]
    assert rollups["unexplained"] == []
    assert rollups["exact"] + rollups["touched_inexact"] == rollups["windows"] > 500
    assert "rollups:" in output and "verify: sent=" in output
