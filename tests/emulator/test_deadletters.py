"""Dead letters users can act on, on the real emulators: summary, redrive, a kill mid-redrive.

The pipeline runs as a real process with the seed's service catalog; messages naming a
service outside it are dead-lettered as unknown_service. The CLI under test
(`python -m stream.deadletters`) runs as a real process too. What ends where is read back
independently: rows with loadgen/readback.py and the verifier, letters with plain pulls.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1

from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.readback import EMPTY_PULL, pull_letters, read_table
from loadgen.seed import SEED_SERVICES
from loadgen.traffic import TrafficOptions, unknown_service_ids
from stream.local.provision import ensure_subscription, ensure_topic
from stream.names import subscription_path, topic_path
from tests.helpers.builders import consent_body
from tests.helpers.load import publish, publish_load, verify_load, wait_for
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

REPO = Path(__file__).parents[2]
SEED_CATALOG = REPO / "tests" / "fixtures" / "seed-service-catalog.txt"
OUTSIDE = unknown_service_ids(frozenset(SEED_SERVICES))  # marketing-6 and the like
FLAGS = ("--rollups=off",)  # rollups play no part here; they only cost time on 2 cores
_SENT = re.compile(r"^redrive: .*\bsent=(\d+)", re.MULTILINE)
_LINE = re.compile(
    r"^redrive: read=(?P<read>\d+) matched=(?P<matched>\d+) sent=(?P<sent>\d+) "
    r"failed=(?P<failed>\d+) exhausted=(?P<exhausted>\d+) dropped=(?P<dropped>\d+) "
    r"refused=(?P<refused>\d+) returned=(?P<returned>\d+) left=(?P<left>\d+) ",
    re.MULTILINE,
)


def _extended_catalog(tmp_path: Path) -> Path:
    """The seed's 25 ids plus the ones the unknown_service traffic names."""
    path = tmp_path / "extended-catalog.txt"
    path.write_text("\n".join([*SEED_SERVICES, *OUTSIDE]) + "\n")
    return path


def _pipeline(resources: TestResources, catalog: Path, log: Path) -> PipelineProcess:
    pipeline = PipelineProcess(resources.flags(*FLAGS, f"--service_catalog={catalog}"), log)
    assert wait_for(lambda: "status:" in pipeline.log(), timeout=120), pipeline.log()[-3000:]
    return pipeline


def _cli(
    resources: TestResources, command: str, *args: str, topic: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m stream.deadletters COMMAND` on the test's dead-letter subscription."""
    argv = [sys.executable, "-m", "stream.deadletters", command]
    argv += ["--subscription", resources.dead_letter_subscription, *args]
    if command == "redrive":
        argv += ["--topic", topic or resources.topic]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def _summary(resources: TestResources) -> dict[str, Any]:
    done = _cli(resources, "summary", "--json", "--timeout", "60")
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["complete"], data
    return data


def _summary_when(resources: TestResources, ready: Any, timeout: float = 180) -> dict[str, Any]:
    """Poll `summary` (it acknowledges nothing) until `ready(summary)`; the last one."""
    deadline = time.monotonic() + timeout
    while True:
        data = _summary(resources)
        if ready(data) or time.monotonic() > deadline:
            return data
        time.sleep(1.0)


def _redrive(resources: TestResources, *args: str, topic: str | None = None) -> dict[str, int]:
    done = _cli(resources, "redrive", *args, topic=topic)
    match = _LINE.search(done.stdout)
    assert match, done.stdout[-3000:] + done.stderr[-3000:]
    counts = {name: int(value) for name, value in match.groupdict().items()}
    counts["exit"] = done.returncode
    counts["exhausted_notes"] = done.stdout.count("  exhausted: letter ")
    return counts


def _peek(subscription: str) -> list[dict[str, str]]:
    """Every letter's attributes, acknowledging none (leases held, then given back)."""
    attributes: dict[str, dict[str, str]] = {}
    ack_ids: list[str] = []
    with pubsub_v1.SubscriberClient() as subscriber:
        empty = 0
        while empty < 2:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 1000}, timeout=3
                )
                received = list(response.received_messages)
            except EMPTY_PULL:
                received = []
            empty = 0 if received else empty + 1
            for r in received:
                attributes[r.message.message_id] = dict(r.message.attributes)
                ack_ids.append(r.ack_id)
        for start in range(0, len(ack_ids), 1000):
            subscriber.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": ack_ids[start : start + 1000],
                    "ack_deadline_seconds": 0,
                }
            )
    return list(attributes.values())


def test_unknown_services_redriven_after_the_catalog_is_extended_become_their_rows(
    resources: TestResources, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.sqlite"
    options = TrafficOptions(
        seed=11, unknown_service_ratio=0.15, invalid_ratio=0.05, users=400, devices=40
    )
    first = _pipeline(resources, SEED_CATALOG, tmp_path / "first.log")
    try:
        stats = publish_load(resources, ledger_path, count=1500, rate=500, options=options)
        with Ledger(ledger_path) as ledger:
            expected = Counter(ledger.expected_letters().values())
        assert stats.sent == 1500 and expected["unknown_service"] > 100
        before = _summary_when(resources, lambda s: s["letters"] >= sum(expected.values()))
    finally:
        assert first.stop() == 0, first.log()[-3000:]

    # summary: exactly the planned counts, each kind from the parse stage
    assert before["kinds"] == dict(expected)
    assert {group["stage"] for group in before["groups"]} == {"parse"}
    unknown = [g for g in before["groups"] if g["kind"] == "unknown_service"]
    assert {g["schema"] for g in unknown} == {"consent.v1", "consent.v2"}
    assert sum(g["count"] for g in unknown) == expected["unknown_service"]
    folded = {e["error"]: e["count"] for e in before["errors"] if e["kind"] == "unknown_service"}
    assert folded == {
        f"{schema}: services: unknown service '<id>' (not in the service catalog of <n> ids)": (
            next(g["count"] for g in unknown if g["schema"] == schema)
        )
        for schema in ("consent.v1", "consent.v2")
    }

    second = _pipeline(resources, _extended_catalog(tmp_path), tmp_path / "second.log")
    try:
        result = _redrive(resources, "--kind", "unknown_service")
        assert result["exit"] == 0, result
        others = sum(expected.values()) - expected["unknown_service"]
        assert (result["sent"], result["failed"], result["left"]) == (
            expected["unknown_service"],
            0,
            others,
        )
        after = _summary(resources)
        assert after["kinds"] == {k: n for k, n in expected.items() if k != "unknown_service"}
        with Ledger(ledger_path) as ledger:
            assert ledger.expect_rows_for("unknown_service") == expected["unknown_service"]
        verdict = verify_load(resources, ledger_path, timeout=150)
    finally:
        assert second.stop() == 0, second.log()[-3000:]
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert verdict.sent == 1500
    # verify drained what was left: exactly the letters of the other kinds, none of old kind
    with Ledger(ledger_path) as ledger:
        drained = Counter(letter.kind for letter in ledger.dead_letters())
    assert drained == Counter({k: n for k, n in expected.items() if k != "unknown_service"})
    assert verdict.history == 0


def test_a_still_invalid_message_stops_after_max_redrives_rounds(
    resources: TestResources, tmp_path: Path
) -> None:
    options = TrafficOptions(seed=12, unknown_service_ratio=1.0, schema_mix={"consent.v1": 1.0})
    pipeline = _pipeline(resources, SEED_CATALOG, tmp_path / "pipeline.log")  # never extended
    try:
        publish_load(resources, tmp_path / "ledger.sqlite", count=3, rate=100, options=options)
        rounds = [_summary_when(resources, lambda s: s["letters"] == 3)]
        for expected_count in ("1", "2"):
            result = _redrive(resources, "--kind", "unknown_service", "--max_redrives", "2")
            assert (result["exit"], result["sent"], result["exhausted"]) == (0, 3, 0), result
            # the pipeline refuses them again and carries the counter into the new letters
            rounds.append(
                _summary_when(resources, lambda s, n=expected_count: s["redrive_counts"] == {n: 3})
            )
        third = _redrive(resources, "--kind", "unknown_service", "--max_redrives", "2")
        still = _summary(resources)
        dropped = _redrive(
            resources, "--kind", "unknown_service", "--max_redrives", "2", "--drop-exhausted"
        )
        gone = _summary(resources)
    finally:
        assert pipeline.stop() == 0, pipeline.log()[-3000:]
    assert [r["redrive_counts"] for r in rounds] == [{"0": 3}, {"1": 3}, {"2": 3}]
    assert [r["kinds"] for r in rounds] == [{"unknown_service": 3}] * 3
    # the third round sends nothing: all three are reported as exhausted and stay
    assert (third["exit"], third["sent"], third["exhausted"], third["left"]) == (0, 0, 3, 3)
    assert third["exhausted_notes"] == 3
    assert (still["letters"], still["redrive_counts"]) == (3, {"2": 3})
    assert (dropped["sent"], dropped["exhausted"], dropped["dropped"], dropped["left"]) == (
        0,
        3,
        3,
        0,
    )
    assert gone["letters"] == 0


def test_sigkill_during_a_redrive_then_again_every_letter_becomes_its_row(
    resources: TestResources, tmp_path: Path
) -> None:
    count = 3000
    ledger_path = tmp_path / "ledger.sqlite"
    options = TrafficOptions(
        seed=13, unknown_service_ratio=1.0, schema_mix={"consent.v1": 1.0}, users=10**9
    )
    # A killed redrive's letters come back when their lease ends: the redrive's own 30 s, or
    # the subscription's deadline for a batch pulled just before the kill. 20 s here (60 s
    # in the product), so that the test waits 35 s for them instead of 65 s.
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.update_subscription(
            request={
                "subscription": {
                    "name": resources.dead_letter_subscription,
                    "ack_deadline_seconds": 20,
                },
                "update_mask": {"paths": ["ack_deadline_seconds"]},
            }
        )
    first = _pipeline(resources, SEED_CATALOG, tmp_path / "first.log")
    try:
        publish_load(resources, ledger_path, count=count, rate=1000, options=options)
        assert _summary_when(resources, lambda s: s["letters"] >= count)["letters"] == count
    finally:
        assert first.stop() == 0, first.log()[-3000:]
    with Ledger(ledger_path) as ledger:
        # told now that the catalog is being extended: each message must become its row
        assert ledger.expect_rows_for("unknown_service") == count
        keys = {
            ledger.loadgen_id(event.seq): event.row_key
            for events in ledger.expected_rows("consent")
            for event in events
        }
    assert len(set(keys.values())) == count  # one row per message: presence is per message

    second = _pipeline(resources, _extended_catalog(tmp_path), tmp_path / "second.log")
    try:
        log = tmp_path / "redrive.log"
        with log.open("wb") as out:
            redrive = subprocess.Popen(
                [sys.executable, "-m", "stream.deadletters", "redrive", "--kind", "unknown_service",
                 "--subscription", resources.dead_letter_subscription, "--topic", resources.topic,
                 "--rate", "300"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                assert wait_for(lambda: _sent(log) >= 300, timeout=120), log.read_text()
                assert redrive.poll() is None, "the redrive ended before the kill"
                os.killpg(redrive.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                redrive.wait(timeout=30)
            finally:
                if redrive.poll() is None:
                    os.killpg(redrive.pid, signal.SIGKILL)
                    redrive.wait(timeout=30)
        assert _sent(log) < count

        def places() -> tuple[set[str], set[str]]:
            table = read_table(PROJECT, resources.instance, resources.table("consent"))
            rows = {lid for lid, key in keys.items() if key in table}
            letters = {a.get("loadgen_id", "") for a in _peek(resources.dead_letter_subscription)}
            return rows, letters

        # Once the killed run's leases have run out, nothing may be missing from both places.
        time.sleep(max(0.0, killed_at + 35 - time.monotonic()))
        assert wait_for(lambda: set(keys) <= set().union(*places()), timeout=60, interval=3)
        rows, letters = places()
        assert rows and letters, (len(rows), len(letters))  # the kill landed mid-way

        again = _redrive(resources, "--kind", "unknown_service")
        assert (again["exit"], again["failed"], again["left"]) == (0, 0, 0), again
        assert again["sent"] == len(letters)
        verdict = verify_load(resources, ledger_path, timeout=150)
    finally:
        assert second.stop() == 0, second.log()[-3000:]
    assert verdict.ok, "\n".join([verdict.line(), *verdict.examples])
    assert (verdict.sent, verdict.rows, verdict.deadletter) == (count, count, 0)
    assert pull_letters(resources.dead_letter_subscription, expected=0, timeout=3) == []


def _sent(log: Path) -> int:
    """The latest `sent=` of the redrive's progress lines (0 before the first)."""
    return max((int(n) for n in _SENT.findall(log.read_text(errors="replace"))), default=0)


def test_envelope_letters_come_back_out_with_their_original_data_and_attributes(
    resources: TestResources, tmp_path: Path
) -> None:
    many = {f"attr_{i:02d}": f"value {i}" for i in range(97)}  # with ours: over 100
    now = datetime.now(UTC)
    originals = [
        (
            json.dumps(consent_body(services=["essential-1", "marketing-6"], when=now)).encode(),
            {"schema": "consent.v1", **many},
        ),
        (b"\xff\xfe not UTF-8 \x00", {"schema": "consent.v1", "origin": "x", **many}),
        (json.dumps(consent_body(domain="shop.example.com", services=["ads-2"], when=now)).encode(),
         {"schema": "consent.v1", "origin": "few attributes"}),
    ]  # fmt: skip
    capture_topic = topic_path(PROJECT, f"capture-{resources.suffix}")
    capture = subscription_path(PROJECT, f"capture-{resources.suffix}-sub")
    publisher = pubsub_v1.PublisherClient()
    ensure_topic(publisher, capture_topic)
    with pubsub_v1.SubscriberClient() as subscriber:
        ensure_subscription(subscriber, capture, capture_topic, 60)
    publisher.stop()

    pipeline = _pipeline(resources, SEED_CATALOG, tmp_path / "pipeline.log")
    try:
        publish(resources.topic, originals)
        letters = _summary_when(resources, lambda s: s["letters"] == 3)
        assert letters["kinds"] == {"unknown_service": 2, "not_utf8": 1}
    finally:
        assert pipeline.stop() == 0, pipeline.log()[-3000:]
    stored = _peek(resources.dead_letter_subscription)
    assert sorted(a.get("deadletter_envelope", "inline") for a in stored) == [
        "inline",
        "json",
        "json",
    ]

    result = _redrive(resources, topic=capture_topic)
    assert (result["exit"], result["sent"], result["left"]) == (0, 3, 0), result
    back = pull_letters(capture, expected=3, timeout=30)
    assert sorted((m.data, sorted(m.attributes.items())) for m in back) == sorted(
        (data, sorted({**attributes, "redrive_count": "1"}.items()))
        for data, attributes in originals
    )
