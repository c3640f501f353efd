"""The running pipeline while Pub/Sub misbehaves: nothing lost, nothing doubled, refusals stop it.

The pipeline's Pub/Sub calls go through the Pub/Sub fault proxy; the load generator and the
verifier talk to the emulator directly. The ledger's verdict must be exact: 0 lost, 0
duplicated (one version per cell, each dead letter once per original), 0 unexpected.
"""

import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.cloud import pubsub_v1

from loadgen.process import PipelineProcess
from loadgen.readback import pull_letters, table_rows
from loadgen.report import PublishStats
from stream.names import PUBSUB_ENV
from tests.faults.pubsub_proxy import TRANSIENT_CODES, PubSubFaultProxy
from tests.faults.test_throttling import assert_never_restarted
from tests.helpers.builders import consent_body, encoded
from tests.helpers.load import publish, publish_load, verify_load, wait_for
from tests.helpers.resources import PROJECT, TestResources, new_resources

pytestmark = [pytest.mark.faults, pytest.mark.emulator, pytest.mark.slow]

TRANSIENT = TRANSIENT_CODES
ACK_DEADLINE = 30  # what a lost pull answer delays its messages by
WRITE_TIMEOUT = 10  # the ack deadline must hold 2 x this + 10 s


def bodies(n: int, domain: str = "example.com") -> list[tuple[bytes, dict[str, str]]]:
    """`n` valid consent.v1 messages, stamped now (as the seed's scale_endpoint did)."""
    now = datetime.now(UTC)
    return [(encoded(consent_body(domain=domain, when=now)), {}) for _ in range(n)]


def pipeline_through(
    proxy: PubSubFaultProxy, resources: TestResources, tmp_path: Path, *flags: str
) -> PipelineProcess:
    pipeline = PipelineProcess(
        resources.flags(f"--write_timeout_seconds={WRITE_TIMEOUT}", *flags),
        tmp_path / "pipeline.log",
        env={PUBSUB_ENV: proxy.address},
    )
    assert wait_for(lambda: "status:" in pipeline.log(), timeout=120), pipeline.log()[-2000:]
    return pipeline


def test_every_pubsub_call_misbehaving_under_load_verifies_exactly(
    emulators: object, pubsub_proxy: PubSubFaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=ACK_DEADLINE)
    for seed, method in enumerate(("Pull", "Acknowledge", "ModifyAckDeadline", "Publish")):
        pubsub_proxy.fail(method, 0.1, codes=TRANSIENT, seed=seed)
        pubsub_proxy.lose_answers(method, 0.05 if method == "Pull" else 0.1, seed=seed + 10)
    pubsub_proxy.delay("Pull", 1.0, ratio=0.05, seed=20)
    pubsub_proxy.duplicate_deliveries(0.05, seed=21)
    pipeline = pipeline_through(pubsub_proxy, resources, tmp_path)
    try:
        stats = publish_load(resources, tmp_path / "ledger.sqlite", count=3000, rate=300)
        # A lost pull answer leaves its messages leased to nobody for the ack deadline.
        verdict = verify_load(resources, tmp_path / "ledger.sqlite", timeout=240)
        assert_never_restarted(pipeline)
    finally:
        pipeline.stop()
    assert stats.sent == 3000
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert verdict.deadletter > 0
    faults = pubsub_proxy.stats()
    for method in ("Pull", "Acknowledge", "Publish"):
        assert faults.of(method).failed > 0 and faults.of(method).lost > 0, faults.line()
    assert faults.of("Pull").duplicates > 0 and faults.of("Pull").delayed > 0


def test_a_pubsub_outage_under_load_is_waited_out_without_a_restart(
    emulators: object, pubsub_proxy: PubSubFaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=ACK_DEADLINE)
    ledger = tmp_path / "ledger.sqlite"
    pipeline = pipeline_through(pubsub_proxy, resources, tmp_path)
    published: list[PublishStats] = []
    publisher = threading.Thread(
        target=lambda: published.append(publish_load(resources, ledger, count=6000, rate=100))
    )
    try:
        publisher.start()
        assert wait_for(
            lambda: table_rows(PROJECT, resources.instance, resources.table("consent")) > 0,
            timeout=60,
        )
        ended = pubsub_proxy.outage(30)
        publisher.join(timeout=200)
        assert published and published[0].sent == 6000
        verdict = verify_load(resources, ledger, timeout=180)
        assert_never_restarted(pipeline)
    finally:
        pipeline.stop()
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    faults = pubsub_proxy.stats()
    assert faults.of("Pull").outage > 0
    assert faults.resumed is not None and faults.resumed >= ended


def test_no_invalid_message_is_acknowledged_before_its_letter_is_stored(
    emulators: object, pubsub_proxy: PubSubFaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=600)  # only a release brings them back soon
    pubsub_proxy.fail("Publish", 1.0, codes=(grpc.StatusCode.UNAVAILABLE,))
    pipeline = pipeline_through(pubsub_proxy, resources, tmp_path)
    valid = bodies(20, domain="kept.example.com")
    invalid = [(b'{"user": ', {"n": str(i)}) for i in range(10)]
    invalid_ids = publish(resources.topic, invalid)
    valid_ids = publish(resources.topic, valid)
    try:
        consent = resources.table("consent")
        # Rows need no letter: they are written and acknowledged while the letters wait.
        assert wait_for(lambda: table_rows(PROJECT, resources.instance, consent) == 20, 60)
        assert wait_for(lambda: pubsub_proxy.stats().of("Publish").failed >= 3, timeout=60)
    finally:
        pipeline.stop()  # Ctrl-C while the letters still cannot be published
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=2) == []
    back = {letter.message_id for letter in pull_letters(resources.subscription, timeout=30)}
    # Every invalid one is back. Valid ones pulled in the same bundle may be back too: their
    # rows were written, but a bundle acknowledges at its end, after its letters.
    assert set(invalid_ids) <= back <= set(invalid_ids) | set(valid_ids)


def test_a_deleted_subscription_stops_the_job_with_what_to_fix(
    emulators: object, tmp_path: Path
) -> None:
    resources = new_resources()
    pipeline = PipelineProcess(resources.flags(), tmp_path / "pipeline.log")
    try:
        assert wait_for(lambda: "status:" in pipeline.log(), timeout=120), pipeline.log()[-2000:]
        publish(resources.topic, bodies(5))
        consent = resources.table("consent")
        assert wait_for(lambda: table_rows(PROJECT, resources.instance, consent) == 5, 60)
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.delete_subscription(request={"subscription": resources.subscription})
        pipeline.process.wait(timeout=60)
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert pipeline.process.returncode == 1, log[-3000:]
    assert "stopped, not restarting" in log and "does not exist" in log, log[-3000:]
    assert resources.subscription in log
    assert "restarting in" not in log


def test_a_removed_permission_stops_the_job_and_gives_back_what_it_held(
    emulators: object, pubsub_proxy: PubSubFaultProxy, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=600)
    pubsub_proxy.fail("Acknowledge", 1.0, codes=(grpc.StatusCode.PERMISSION_DENIED,))
    ids = publish(resources.topic, bodies(30))
    pipeline = PipelineProcess(
        resources.flags(), tmp_path / "pipeline.log", env={PUBSUB_ENV: pubsub_proxy.address}
    )
    try:
        pipeline.process.wait(timeout=180)
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert pipeline.process.returncode == 1, log[-3000:]
    assert "stopped, not restarting" in log and "roles/pubsub.subscriber" in log, log[-3000:]
    assert "restarting in" not in log
    # Nothing acknowledged: with a 10-minute deadline only the release brings them back now.
    back = pull_letters(resources.subscription, expected=30, timeout=30)
    assert sorted(letter.message_id for letter in back) == sorted(ids)


def test_a_deleted_dead_letter_topic_stops_the_job_and_acknowledges_no_invalid_message(
    emulators: object, tmp_path: Path
) -> None:
    resources = new_resources(ack_deadline=600)
    with pubsub_v1.PublisherClient() as publisher:
        publisher.delete_topic(request={"topic": resources.dead_letter_topic})
    invalid_ids = publish(resources.topic, [(b"not json", {}) for _ in range(5)])
    pipeline = PipelineProcess(resources.flags("--max_restarts=5"), tmp_path / "pipeline.log")
    try:
        pipeline.process.wait(timeout=180)
    finally:
        pipeline.stop()
    log = pipeline.log()
    assert pipeline.process.returncode == 1, log[-3000:]
    assert "stopped, not restarting" in log and resources.dead_letter_topic in log, log[-3000:]
    assert "restarting in" not in log
    back = pull_letters(resources.subscription, expected=5, timeout=30)
    assert sorted(letter.message_id for letter in back) == sorted(invalid_ids)
