"""The Pub/Sub fault proxy itself, against the real Pub/Sub emulator.

Each rule is checked by its effect as the emulator sees it (read directly, not through the
proxy): a failed call applied nothing, a lost answer was applied, a duplicate delivery is an
earlier delivery with its ack id, a delayed call whose client gave up was never forwarded.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as ApiPublisherClient

from stream.local.emulators import Emulators
from stream.names import PUBSUB_ENV, subscription_path, topic_path
from tests.faults.pubsub_proxy import (
    ACKNOWLEDGE,
    PUBLISH,
    PULL,
    PubSubFaultProxy,
    full_name,
    method_shapes,
)
from tests.faults.relay import Shape, draw

pytestmark = [pytest.mark.faults, pytest.mark.emulator]

PROJECT = "test-project"


class Clients:
    """Clients through the proxy (`faulty`) and straight to the emulator (`direct`)."""

    def __init__(self, proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
        self.direct_pub = pubsub_v1.PublisherClient()
        self.direct_sub = pubsub_v1.SubscriberClient()
        with monkeypatch.context() as patch:
            patch.setenv(PUBSUB_ENV, proxy.address)
            self.faulty_pub = pubsub_v1.PublisherClient()
            self.faulty_sub = pubsub_v1.SubscriberClient()
        name = uuid.uuid4().hex[:10]
        self.topic = topic_path(PROJECT, f"proxy-{name}")
        self.subscription = subscription_path(PROJECT, f"proxy-{name}-sub")
        self.direct_pub.create_topic(request={"name": self.topic})
        self.direct_sub.create_subscription(
            request={"name": self.subscription, "topic": self.topic, "ack_deadline_seconds": 10}
        )

    def publish(self, data: bytes, faulty: bool = False, timeout: float = 10.0) -> list[str]:
        client = self.faulty_pub if faulty else self.direct_pub
        response = ApiPublisherClient.publish(  # the plain API call, no batching
            client,
            request={"topic": self.topic, "messages": [{"data": data}]},
            retry=None,
            timeout=timeout,
        )
        return list(response.message_ids)

    def pull(self, faulty: bool = False, wait: float = 5.0) -> list[Any]:
        client = self.faulty_sub if faulty else self.direct_sub
        deadline = time.monotonic() + wait
        while True:
            response = client.pull(
                request={"subscription": self.subscription, "max_messages": 100},
                retry=None,
                timeout=3.0,
            )
            if response.received_messages or time.monotonic() >= deadline:
                return list(response.received_messages)

    def ack(self, ack_ids: list[str], faulty: bool = False) -> None:
        client = self.faulty_sub if faulty else self.direct_sub
        client.acknowledge(
            request={"subscription": self.subscription, "ack_ids": ack_ids},
            retry=None,
            timeout=5.0,
        )


@pytest.fixture
def clients(pubsub_proxy: PubSubFaultProxy, monkeypatch: pytest.MonkeyPatch) -> Clients:
    return Clients(pubsub_proxy, monkeypatch)


def test_the_shapes_of_the_methods_the_pipeline_calls() -> None:
    shapes = method_shapes()
    for method in ("Pull", "Acknowledge", "ModifyAckDeadline", "Publish"):
        assert shapes[full_name(method)] is Shape.UNARY_UNARY
    assert shapes["/google.pubsub.v1.Subscriber/StreamingPull"] is Shape.STREAM_STREAM
    with pytest.raises(ValueError, match="unknown method"):
        full_name("Pul")


def test_without_rules_everything_passes_unchanged(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    (message_id,) = clients.publish(b"hello", faulty=True)
    (received,) = clients.pull(faulty=True)
    assert (received.message.data, received.message.message_id) == (b"hello", message_id)
    clients.ack([received.ack_id], faulty=True)
    stats = pubsub_proxy.stats()
    assert (stats.of("Publish").forwarded, stats.of("Acknowledge").forwarded) == (1, 1)
    assert stats.of("Pull").calls >= 1
    assert clients.pull(wait=0.0) == []


def test_failed_calls_follow_the_seeded_draw_and_apply_nothing(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    codes = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)
    pubsub_proxy.fail("Publish", 0.5, codes=codes, seed=11)
    sent = []
    for k in range(12):
        expected_fail = draw(11, "fail", PUBLISH, k) < 0.5
        try:
            clients.publish(f"m{k}".encode(), faulty=True)
            assert not expected_fail, f"call {k} should have failed"
            sent.append(f"m{k}".encode())
        except (gexc.ResourceExhausted, gexc.Aborted):
            assert expected_fail, f"call {k} should have passed"
    stats = pubsub_proxy.stats().of("Publish")
    assert stats.failed == 12 - len(sent) > 0
    assert set(stats.codes) <= {"RESOURCE_EXHAUSTED", "ABORTED"}
    received = clients.pull(wait=5.0)
    while len(received) < len(sent):
        more = clients.pull(wait=2.0)
        if not more:
            break
        received += more
    assert sorted(r.message.data for r in received) == sorted(sent)


def test_a_lost_answer_was_applied(pubsub_proxy: PubSubFaultProxy, clients: Clients) -> None:
    pubsub_proxy.lose_answers("Publish", 1.0)
    with pytest.raises(gexc.DeadlineExceeded):
        clients.publish(b"published anyway", faulty=True)
    (received,) = clients.pull()
    assert received.message.data == b"published anyway"
    assert pubsub_proxy.stats().of("Publish").lost == 1


def test_a_lost_ack_was_applied_and_a_failed_one_was_not(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    clients.publish(b"lost-answer")
    clients.publish(b"failed-call")
    received = {r.message.data: r for r in clients.pull()}
    while len(received) < 2:
        received.update({r.message.data: r for r in clients.pull()})
    pubsub_proxy.lose_answers("Acknowledge", 1.0)
    with pytest.raises(gexc.DeadlineExceeded):
        clients.ack([received[b"lost-answer"].ack_id], faulty=True)
    pubsub_proxy.reset()
    pubsub_proxy.fail("Acknowledge", 1.0, codes=(grpc.StatusCode.INTERNAL,))
    with pytest.raises(gexc.InternalServerError):
        clients.ack([received[b"failed-call"].ack_id], faulty=True)
    # After the 10 s ack deadline only the message whose ack never reached Pub/Sub returns.
    time.sleep(11)
    again = clients.pull(wait=10.0)
    assert [r.message.data for r in again] == [b"failed-call"]


def test_a_pull_can_deliver_an_earlier_message_again_with_its_ack_id(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    clients.publish(b"first")
    (first,) = clients.pull(faulty=True)
    pubsub_proxy.duplicate_deliveries(1.0)
    clients.publish(b"second")
    second = clients.pull(faulty=True)
    assert [r.message.data for r in second] == [b"second", b"first"]
    assert (second[1].ack_id, second[1].message.message_id) == (
        first.ack_id,
        first.message.message_id,
    )
    clients.ack([r.ack_id for r in second], faulty=True)  # acking a duplicate is harmless
    assert pubsub_proxy.stats().of("Pull").duplicates == 1


def test_an_outage_fails_every_call_until_it_ends(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    ends = pubsub_proxy.outage(2.0)
    for call in (lambda: clients.publish(b"x", faulty=True), lambda: clients.pull(faulty=True)):
        with pytest.raises(gexc.ServiceUnavailable):
            call()
    assert pubsub_proxy.stats().resumed is None
    time.sleep(max(0.0, ends - time.time()) + 0.1)
    clients.publish(b"after", faulty=True)
    stats = pubsub_proxy.stats()
    assert stats.resumed is not None and stats.resumed >= ends
    assert stats.of("Publish").outage == 1 and stats.of("Pull").outage == 1


def test_a_delayed_call_the_client_gave_up_on_is_never_forwarded(
    pubsub_proxy: PubSubFaultProxy, clients: Clients
) -> None:
    pubsub_proxy.delay("Publish", 3.0)
    with pytest.raises(gexc.DeadlineExceeded):
        clients.publish(b"too slow", faulty=True, timeout=1.0)
    time.sleep(2.5)  # the proxy's hold ends; it must not forward the abandoned call
    assert clients.pull(wait=2.0) == []
    stats = pubsub_proxy.stats().of("Publish")
    assert (stats.delayed, stats.forwarded) == (1, 0)


def test_rules_are_per_method(pubsub_proxy: PubSubFaultProxy, clients: Clients) -> None:
    pubsub_proxy.fail(ACKNOWLEDGE, 1.0)
    clients.publish(b"m", faulty=True)
    (received,) = clients.pull(faulty=True)
    with pytest.raises(gexc.ServiceUnavailable):
        clients.ack([received.ack_id], faulty=True)
    stats = pubsub_proxy.stats()
    assert stats.of(PULL).failed == 0 and stats.of(ACKNOWLEDGE).failed == 1


def test_the_cli_runs_until_signalled(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.faults.pubsub_proxy", "--upstream"]
    command += [os.environ[PUBSUB_ENV], "--fail", "Publish=1.0", "--code", "INTERNAL"]
    command += ["--stats-every", "0.2"]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("pubsub fault proxy 127.0.0.1:"), banner
        with monkeypatch.context() as patch:
            patch.setenv(PUBSUB_ENV, banner.split()[3])
            publisher = pubsub_v1.PublisherClient()
        with pytest.raises(gexc.InternalServerError):
            ApiPublisherClient.publish(
                publisher,
                request={"topic": topic_path(PROJECT, "cli-none"), "messages": [{"data": b"x"}]},
                retry=None,
                timeout=5,
            )
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "final: Publish: calls=1 failed=1" in out
