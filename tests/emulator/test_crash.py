"""SIGKILL the pipeline in the middle of a load run, restart it: nothing lost or duplicated.

The pull source acknowledges a message only after its row or dead letter is stored, so what
the killed process had pulled comes back after the ack deadline and is rewritten with the
same cells at the same timestamps.
"""

import re
import threading
from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from loadgen.report import PublishStats
from tests.helpers.load import publish_load, verify_load, wait_for
from tests.helpers.resources import new_resources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

_WRITTEN = re.compile(r"written=([1-9][0-9]*) ")


def _has_written(process: PipelineProcess) -> bool:
    """Whether a status line reports rows written (waiting on progress, not on the clock)."""
    return _WRITTEN.search(process.log()) is not None


def test_sigkill_mid_load_then_restart_loses_nothing(emulators: object, tmp_path: Path) -> None:
    resources = new_resources(ack_deadline=20)  # >= 2 x write timeout (5 s) + 10 s
    flags = resources.flags("--write_timeout_seconds=5")
    ledger = tmp_path / "ledger.sqlite"
    published: list[PublishStats] = []
    publisher = threading.Thread(
        target=lambda: published.append(publish_load(resources, ledger, count=6000, rate=300))
    )
    first = PipelineProcess(flags, tmp_path / "first.log")
    try:
        # Start-up time varies a lot between machines (Prism, SDK worker): publish only once the
        # job runs, and kill only once rows are being written, so the kill lands mid-load.
        assert wait_for(lambda: "status:" in first.log(), timeout=120), first.log()[-2000:]
        publisher.start()
        assert wait_for(lambda: _has_written(first), timeout=60), first.log()[-2000:]
        assert first.alive()
        assert publisher.is_alive(), "the load ended before the kill: not a mid-load crash"
        first.kill()  # SIGKILL to its whole process group: no cleanup code runs
        second = PipelineProcess(flags, tmp_path / "second.log")
        try:
            publisher.join(timeout=120)
            verdict = verify_load(resources, ledger, timeout=150)
        finally:
            second.stop()
    finally:
        first.kill()
    assert published and published[0].sent == 6000
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert verdict.sent == 6000
