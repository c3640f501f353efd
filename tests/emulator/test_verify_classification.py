"""The verifier against real emulators: rows and dead letters written by hand, exact verdicts.

No pipeline runs here: each test writes exactly what a correct pipeline would have written
for a generated ledger (rows at their event timestamps, dead letters with their reasons),
then breaks one thing on purpose and checks that verify classifies it, and only it.
"""

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest
from google.cloud.bigtable.data import BigtableDataClient, RowMutationEntry, SetCell

from loadgen.__main__ import main as loadgen_main
from loadgen.ledger import Ledger
from loadgen.traffic import Planned, TrafficGenerator, TrafficOptions
from loadgen.verify import Targets, Verdict, verify, verify_once
from tests.helpers.load import publish
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator]

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^verify: sent=\d+ rows=\d+ deadletter=\d+ lost=\d+ duplicated=\d+ unexpected=\d+$"
)
CLOCK = datetime(2026, 11, 24, 6, 40, 53, 123000, tzinfo=UTC)
# Late events spread over 10 minutes, few users: keys with several events (some superseded,
# some consent.v2 then v1), every invalid kind that comes up, and duplicates of both kinds.
TRAFFIC = TrafficOptions(
    seed=21, invalid_ratio=0.15, duplicate_ratio=0.05, late_ratio=1.0, users=40, devices=30
)
COUNT = 300


@dataclass
class World:
    """A ledger of COUNT sent messages and the resources where their outcomes belong."""

    resources: TestResources
    ledger: Ledger
    messages: dict[int, Planned]  # seq -> message, duplicates resolved as Publisher does

    @property
    def targets(self) -> Targets:
        return Targets(
            project=PROJECT,
            instance=self.resources.instance,
            tables={g: self.resources.table(g) for g in ("consent", "telemetry")},
            dead_letter_subscription=self.resources.dead_letter_subscription,
        )

    def rows(self, group: str | None = None) -> dict[str, list[Planned]]:
        """Row key -> its messages (oldest first), for one table group or all."""
        keys: dict[str, list[Planned]] = {}
        for p in self.messages.values():
            if p.expect == "row" and group in (None, p.table_group):
                keys.setdefault(p.row_key, []).append(p)
        return {k: sorted(v, key=lambda p: p.timestamp_micros) for k, v in keys.items()}

    def letters(self) -> list[int]:
        return [seq for seq, p in self.messages.items() if p.expect == "deadletter"]

    def write(self, group: str, entries: list[RowMutationEntry]) -> None:
        with BigtableDataClient(project=PROJECT) as client:
            table = client.get_table(self.resources.instance, self.resources.table(group))
            table.bulk_mutate_rows(entries)

    def write_rows(self, skip: str = "") -> None:
        """Every row event, as the pipeline writes it: all cells at the event timestamp."""
        for group in ("consent", "telemetry"):
            entries = [
                RowMutationEntry(
                    p.row_key.encode(),
                    [
                        SetCell(*column.split(":", 1), value, p.timestamp_micros)
                        for column, value in p.cells.items()
                    ],
                )
                for key, events in self.rows(group).items()
                if key != skip
                for p in events
            ]
            self.write(group, entries)

    def publish_letters(self, seqs: list[int], same_original: bool = False) -> None:
        """Dead letters as the pipeline publishes them: raw bytes plus the attributes.

        Each one names a different original delivery, unless `same_original`: then a
        repeated seq is the same delivery dead-lettered again (after a redelivery).
        """
        publish(
            self.resources.dead_letter_topic,
            [
                (
                    self.messages[seq].data,
                    {
                        "loadgen_id": self.ledger.loadgen_id(seq),
                        "deadletter_kind": self.messages[seq].reason,
                        "deadletter_stage": "parse",
                        "deadletter_message_id": f"mid-{seq}"
                        if same_original
                        else f"mid-{seq}-{index}",
                    },
                )
                for index, seq in enumerate(seqs)
            ],
        )

    def verify_once(self) -> Verdict:
        with BigtableDataClient(project=PROJECT) as client:
            return verify_once(self.ledger, self.targets, client)

    def cli_verify(self, timeout: float) -> subprocess.CompletedProcess[str]:
        targets = self.targets
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "loadgen",
                "verify",
                f"--ledger={self.ledger.path}",
                f"--project={PROJECT}",
                f"--instance={targets.instance}",
                f"--consent-table={targets.tables['consent']}",
                f"--telemetry-table={targets.tables['telemetry']}",
                f"--dead-letter-subscription={targets.dead_letter_subscription}",
                f"--timeout={timeout}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def plan() -> dict[int, Planned]:
    """COUNT generated messages numbered from 0, `duplicate_of` resolved to the seq before."""
    messages: dict[int, Planned] = {}
    for seq, p in enumerate(islice(TrafficGenerator(TRAFFIC, clock=CLOCK), COUNT)):
        messages[seq] = replace(p, duplicate_of=seq - 1) if p.duplicate_of == -1 else p
    return messages


@pytest.fixture
def world(resources: TestResources, tmp_path: Path) -> Iterator[World]:
    """A ledger with COUNT messages, all marked sent; nothing written or published yet."""
    messages = plan()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add(messages.items())
        ledger.settle([(seq, f"mid-{seq}", 0, 0) for seq in messages], [])
        yield World(resources, ledger, messages)


def totals(verdict: Verdict) -> tuple[int, int, int]:
    return verdict.lost, verdict.duplicated, verdict.unexpected


def test_the_generated_ledger_is_a_fair_test(world: World) -> None:
    """Guards the other tests' assumptions about the seeded traffic."""
    rows = world.rows()
    assert len(world.letters()) > 20
    assert {p.reason for p in world.messages.values()} >= {"invalid_json", "missing_field"}
    assert {p.table_group for p in world.messages.values() if p.expect == "row"} == {
        "consent",
        "telemetry",
    }
    assert any(len(events) >= 3 for events in rows.values())  # superseded versions
    assert any(p.duplicate_of is not None for p in world.messages.values())
    # No (key, ms) carries two different contents (see the consent v1/v2 xfail in the unit
    # tests): otherwise even a perfect pipeline would show a "lost" message here.
    for events in rows.values():
        by_ts: dict[int, set[str]] = {}
        for p in events:
            by_ts.setdefault(p.timestamp_micros, set()).add(repr(sorted(p.cells.items())))
        assert all(len(contents) == 1 for contents in by_ts.values())


def test_everything_delivered_is_all_zero(world: World) -> None:
    world.write_rows()
    world.publish_letters(world.letters())

    verdict = verify(world.ledger, world.targets, timeout=10, progress=False)

    assert totals(verdict) == (0, 0, 0), verdict.examples
    assert verdict.sent == COUNT
    assert verdict.rows == len(world.rows())
    assert verdict.deadletter == len(world.letters())
    assert verdict.ok
    assert verdict.line() == (
        f"verify: sent={COUNT} rows={len(world.rows())} deadletter={len(world.letters())} "
        "lost=0 duplicated=0 unexpected=0"
    )


def test_missing_row_loses_each_of_its_messages(world: World) -> None:
    key, events = max(world.rows("consent").items(), key=lambda item: len(item[1]))
    assert len(events) >= 3
    world.write_rows(skip=key)
    world.publish_letters(world.letters())

    verdict = world.verify_once()

    assert totals(verdict) == (len(events), 0, 0), verdict.examples
    assert verdict.rows == len(world.rows()) - 1
    assert verdict.examples == [f"lost: row {key} missing ({len(events)} messages)"]


def test_extra_cell_version_nobody_sent_is_duplicated(world: World) -> None:
    # A key whose newest event is consent.v1 and which has an older consent.v2 event: the
    # v2-only column `region` may then carry an extra version without hiding any expected
    # cell, even if the table's max-1-version GC runs (it keeps the newest per column).
    key, events = next(
        (key, events)
        for key, events in world.rows("consent").items()
        if events[-1].schema == "consent.v1"
        and all(p.timestamp_micros < events[-1].timestamp_micros for p in events[:-1])
        and any(p.schema == "consent.v2" for p in events)
    )
    stray = events[-1].timestamp_micros + 1000  # e.g. a retry stamped with its write time
    assert stray not in {p.timestamp_micros for p in events}
    world.write_rows()
    world.publish_letters(world.letters())
    world.write(
        "consent", [RowMutationEntry(key.encode(), [SetCell("cf1", b"region", b"eu", stray)])]
    )

    verdict = world.verify_once()

    assert totals(verdict) == (0, 1, 0), verdict.examples
    assert verdict.examples == [
        f"duplicated: row {key} cf1:region has versions [{stray}] nobody sent"
    ]


def test_row_nobody_sent_is_unexpected(world: World) -> None:
    world.write_rows()
    world.publish_letters(world.letters())
    stranger = "shop0.example.com#00000000-0000-4000-8000-000000000000"
    world.write(
        "consent",
        [RowMutationEntry(stranger.encode(), [SetCell("cf1", b"services", b"[]", 1000)])],
    )

    verdict = world.verify_once()

    assert totals(verdict) == (0, 0, 1), verdict.examples
    assert verdict.rows == len(world.rows()) + 1
    assert verdict.examples == [f"unexpected: row {stranger} nobody sent"]


def test_dead_letter_published_twice_is_duplicated(world: World) -> None:
    world.write_rows()
    twice = world.letters()[3]
    world.publish_letters([*world.letters(), twice])

    verdict = world.verify_once()

    assert totals(verdict) == (0, 1, 0), verdict.examples
    assert verdict.deadletter == len(world.letters()) + 1
    assert verdict.examples == [f"duplicated: message {twice} dead-lettered 2 times"]


def test_same_delivery_dead_lettered_twice_is_a_redelivery(world: World) -> None:
    world.write_rows()
    twice = world.letters()[3]
    world.publish_letters([*world.letters(), twice], same_original=True)

    verdict = world.verify_once()

    assert totals(verdict) == (0, 0, 0), verdict.examples
    assert verdict.redelivered == 1


def test_missing_dead_letter_is_lost(world: World) -> None:
    world.write_rows()
    omitted = world.letters()[5]
    world.publish_letters([seq for seq in world.letters() if seq != omitted])

    verdict = world.verify_once()

    assert totals(verdict) == (1, 0, 0), verdict.examples
    assert verdict.deadletter == len(world.letters()) - 1
    reason = world.messages[omitted].reason
    assert verdict.examples == [f"lost: dead letter for message {omitted} ({reason}) missing"]


def test_cli_exits_0_when_nothing_is_wrong(world: World) -> None:
    world.write_rows()
    world.publish_letters(world.letters())

    result = world.cli_verify(timeout=5)

    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.splitlines()[-1]
    assert LINE.fullmatch(last), last
    assert last == (
        f"verify: sent={COUNT} rows={len(world.rows())} deadletter={len(world.letters())} "
        "lost=0 duplicated=0 unexpected=0"
    )


def test_cli_exits_1_when_something_is_lost(world: World) -> None:
    key, events = max(world.rows("telemetry").items(), key=lambda item: len(item[1]))
    world.write_rows(skip=key)
    world.publish_letters(world.letters())

    # Short timeout: with something lost, verify waits (and retries) until it runs out.
    result = world.cli_verify(timeout=1)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert LINE.fullmatch(lines[-1]), lines[-1]
    assert lines[-1] == (
        f"verify: sent={COUNT} rows={len(world.rows()) - 1} "
        f"deadletter={len(world.letters())} lost={len(events)} duplicated=0 unexpected=0"
    )
    assert f"  lost: row {key} missing ({len(events)} messages)" in lines


def test_publish_from_file_honours_max_message_bytes(
    resources: TestResources, tmp_path: Path
) -> None:
    body = (
        '{"user": "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b", "domain": "example.com", '
        f'"services": ["essential-1"], "message_timestamp": "{datetime.now(UTC).isoformat()}"}}'
    )
    assert len(body) > 150
    source = tmp_path / "seed.jsonl"
    source.write_text(body + "\n")
    ledger_path = tmp_path / "ledger.sqlite"
    code = loadgen_main(
        [
            "publish",
            f"--from-file={source}",
            "--max-message-bytes=100",
            "--rate=1000",
            "--count=1",
            f"--ledger={ledger_path}",
            f"--topic={resources.topic}",
        ]
    )
    assert code == 0
    with Ledger(ledger_path) as ledger:
        assert ledger.expected_letters() == {0: "payload_too_large"}
