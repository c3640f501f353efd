"""Publish mixed traffic -> the pipeline -> verify: nothing lost, duplicated or unexpected."""

from pathlib import Path

import pytest

from loadgen.process import PipelineProcess
from tests.helpers.load import publish_load, verify_load
from tests.helpers.resources import TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def test_mixed_load_verifies_clean(resources: TestResources, tmp_path: Path) -> None:
    pipeline = PipelineProcess(resources.flags(), tmp_path / "pipeline.log")
    try:
        stats = publish_load(resources, tmp_path / "ledger.sqlite", count=3000, rate=600)
        verdict = verify_load(resources, tmp_path / "ledger.sqlite")
    finally:
        pipeline.stop()
    assert stats.sent == 3000 and stats.failed == 0
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert verdict.sent == 3000
    # The mix really exercised every path: invalid messages and duplicates were sent.
    assert verdict.deadletter > 100
    assert 0 < verdict.rows < 3000 - verdict.deadletter  # duplicates and superseded keys
