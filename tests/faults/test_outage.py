"""Bigtable down for longer than every timeout: the pipeline waits it out; a refusal costs seconds.

1. A 150 s outage under load, longer than the write timeout (10 s) and the subscription's ack
   deadline (30 s) configured here: the writers back off in place, the held messages keep
   their leases, nothing is pulled twice, the job never restarts, rows resume within seconds
   of the outage's end, and the ledger verifies exactly.
2. A write Bigtable refuses for good (PERMISSION_DENIED) fails the job at once, nothing is
   dead-lettered, and the messages it held are available again at once, although the
   subscription's ack deadline is ten minutes.
3. The same when a job is stopped (Ctrl-C) while its writes back off.
"""

import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from loadgen.process import PipelineProcess
from loadgen.readback import pull_letters, table_rows
from loadgen.report import PublishStats
from stream.names import BIGTABLE_ENV
from tests.faults.proxy import FaultProxy
from tests.faults.test_throttling import assert_never_restarted, throttled_seconds
from tests.helpers.builders import consent_body, encoded
from tests.helpers.load import publish, publish_load, verify_load, wait_for
from tests.helpers.resources import PROJECT, new_resources

pytestmark = [pytest.mark.faults, pytest.mark.emulator, pytest.mark.slow]

OUTAGE_SECONDS = 150
ACK_DEADLINE = 30  # = 2 x the write timeout + 10, the shortest the pipeline accepts
WRITE_TIMEOUT = 10
READERS, PULL_MAX = 2, 1000  # the defaults: at most one batch per reader is held at a time
# Functional bound, not a benchmark: the writers' backoff is capped at 10 s, so the first
# row after the outage lands well within this; a writer that had given up would never.
RESUMED_WITHIN_SECONDS = 30
LONGEST_ACK_DEADLINE = 600  # Pub/Sub's maximum: only a release makes messages come back soon
_WRITTEN = re.compile(r"status: .*written=([1-9][0-9]*) ")
_PEAK = re.compile(r"leases: extended \d+ messages .* \(held: \d+, peak: (\d+)\)")


def released_in(log: str) -> int:
    """Messages the job gave back (ack deadline 0): by a torn-down reader or at the job's end."""
    return sum(int(n) for n in re.findall(r"released (\d+) messages", log))


def test_a_150s_outage_under_load_is_waited_out_in_place(
    emulators: object, proxy: FaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=ACK_DEADLINE)
    ledger = tmp_path / "ledger.sqlite"
    pipeline = PipelineProcess(
        resources.flags(f"--write_timeout_seconds={WRITE_TIMEOUT}"),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    published: list[PublishStats] = []
    # 50/s for 160 s: rows before the outage, a backlog during it, traffic after it.
    publisher = threading.Thread(
        target=lambda: published.append(publish_load(resources, ledger, count=8000, rate=50))
    )
    try:
        assert wait_for(lambda: "status:" in pipeline.log(), timeout=120), pipeline.log()[-2000:]
        publisher.start()
        assert wait_for(lambda: _WRITTEN.search(pipeline.log()) is not None, timeout=60)
        ended = proxy.outage(OUTAGE_SECONDS)
        publisher.join(timeout=400)
        assert published and published[0].sent == 8000
        verdict = verify_load(resources, ledger, timeout=180)
        assert wait_for(lambda: throttled_seconds(pipeline.log()) >= OUTAGE_SECONDS / 2, 30)
        assert_never_restarted(pipeline)
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    faults = proxy.stats()
    assert faults.outage_ended == ended and faults.outage_calls > 0
    # Every writer slept through the outage rather than failing; Dataflow would see it.
    assert throttled_seconds(log) >= OUTAGE_SECONDS / 2, log[-3000:]
    # Rows resumed soon after the outage ended (measured by the proxy: the first call it
    # forwarded upstream again).
    assert faults.resumed is not None
    assert 0 <= faults.resumed - ended <= RESUMED_WITHIN_SECONDS
    # Leases: held messages were extended past the 30 s deadline, none was pulled again
    # while held, and no more than one batch per reader was ever held (bounded memory).
    peaks = [int(p) for p in _PEAK.findall(log)]
    assert peaks, log[-3000:]
    assert max(peaks) <= READERS * PULL_MAX
    assert "redelivered=" not in log
    assert "pulled again while this process still held them" not in log
    assert faults.empty_mutation_entries == 0


def _published_consent(topic: str, count: int) -> list[str]:
    now = datetime.now(UTC)
    bodies = [consent_body(domain="refused.example.com", when=now) for _ in range(count)]
    return publish(topic, [(encoded(body), {}) for body in bodies])


def test_a_refused_write_fails_the_job_and_gives_its_messages_back_at_once(
    emulators: object, proxy: FaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=LONGEST_ACK_DEADLINE)
    proxy.fail_calls(1.0, code=grpc.StatusCode.PERMISSION_DENIED)
    ids = _published_consent(resources.topic, 30)
    pipeline = PipelineProcess(
        resources.flags("--max_restarts=0"),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    try:
        pipeline.process.wait(timeout=180)
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert pipeline.process.returncode == 1, log[-3000:]
    assert "Bigtable refused the write" in log
    assert released_in(log) == 30
    # With a 10-minute ack deadline, only the release makes them available now.
    back = pull_letters(resources.subscription, expected=30, timeout=20)
    assert sorted(letter.message_id for letter in back) == sorted(ids)
    assert table_rows(PROJECT, resources.instance, resources.table("consent")) == 0
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []


def test_a_job_stopped_while_its_writes_back_off_gives_its_messages_back_at_once(
    emulators: object, proxy: FaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=LONGEST_ACK_DEADLINE)
    proxy.outage(600)
    ids = _published_consent(resources.topic, 20)
    pipeline = PipelineProcess(
        resources.flags(),
        tmp_path / "pipeline.log",
        env={BIGTABLE_ENV: proxy.address},
    )
    try:
        assert wait_for(lambda: "leases: extended 20 messages" in pipeline.log(), timeout=120), (
            pipeline.log()[-3000:]
        )
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert pipeline.process.returncode == 0, log[-3000:]
    assert released_in(log) == 20, log[-3000:]
    back = pull_letters(resources.subscription, expected=20, timeout=20)
    assert sorted(letter.message_id for letter in back) == sorted(ids)
    assert table_rows(PROJECT, resources.instance, resources.table("consent")) == 0
