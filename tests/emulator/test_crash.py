"""SIGKILL the pipeline in the middle of a load run, restart it: nothing lost or duplicated.

The pull source acknowledges a message only after its row or dead letter is stored, so what
the killed process had pulled comes back after the ack deadline and is rewritten with the
same cells at the same timestamps.
"""

import threading
import time
from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from loadgen.report import PublishStats
from tests.helpers.load import publish_load, verify_load
from tests.helpers.resources import new_resources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def test_sigkill_mid_load_then_restart_loses_nothing(emulators: object, tmp_path: Path) -> None:
    resources = new_resources(ack_deadline=20)  # >= 2 x write timeout (5 s) + 10 s
    flags = resources.flags("--write_timeout_seconds=5")
    ledger = tmp_path / "ledger.sqlite"
    published: list[PublishStats] = []
    publisher = threading.Thread(
        target=lambda: published.append(publish_load(resources, ledger, count=4000, rate=400))
    )
    first = PipelineProcess(flags, tmp_path / "first.log")
    publisher.start()
    try:
        time.sleep(6)  # start-up, then a few seconds of processing
        assert first.alive()
        assert "written=" in first.log(), "the first pipeline never got going"
        first.kill()  # SIGKILL to its whole process group: no cleanup code runs
        second = PipelineProcess(flags, tmp_path / "second.log")
        try:
            publisher.join(timeout=120)
            verdict = verify_load(resources, ledger, timeout=150)
        finally:
            second.stop()
    finally:
        first.kill()
    assert published and published[0].sent == 4000
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert verdict.sent == 4000
