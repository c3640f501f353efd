"""The verifier's classification (lost / duplicated / unexpected) on hand-built ledgers and rows."""

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest

from loadgen.expect import PUBLISH_TIME
from loadgen.ledger import ExpectedEvent, Ledger, StoredLetter
from loadgen.readback import StoredRow
from loadgen.traffic import ANY_KIND, Planned, TrafficGenerator, TrafficOptions
from loadgen.verify import Verdict, judge_letters, judge_row, judge_table

LINE = re.compile(
    r"^verify: sent=(\d+) rows=(\d+) deadletter=(\d+) lost=(\d+) duplicated=(\d+) "
    r"unexpected=(\d+)$"
)
T1, T2, T3 = 1_795_000_000_000_000, 1_795_000_001_000_000, 1_795_000_002_000_000


def row(key: str, ts: int, **cells: str) -> Planned:
    """A sent message that must become (or be superseded in) row `key` at `ts`."""
    return Planned(
        data=b"{}",
        attributes={"schema": "consent.v1"},
        schema="consent.v1",
        expect="row",
        table_group="consent",
        row_key=key,
        timestamp_micros=ts,
        cells={f"cf1:{q}": v for q, v in cells.items()},
    )


def letter(reason: str) -> Planned:
    return Planned(b"", {"schema": "consent.v1"}, "consent.v1", "deadletter", reason=reason)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite") as opened:
        yield opened


def record(
    ledger: Ledger,
    *planned: Planned,
    failed: tuple[int, ...] = (),
    window: tuple[int, int] = (T1, T1 + 20_000),
) -> list[int]:
    """Add the messages and settle them as sent (or failed); returns their seqs.

    `window`: when each was published (micros), for publish-stamped expectations.
    """
    start = ledger.next_seq()
    numbered = list(enumerate(planned, start))
    ledger.add(numbered)
    ledger.settle(
        [(seq, f"mid-{seq}", *window) for seq, _ in numbered if seq not in failed],
        [(seq, "DeadlineExceeded") for seq in failed],
    )
    return [seq for seq, _ in numbered]


_DELIVERIES = iter(range(10**9))


def deliver(
    ledger: Ledger, seq: int | str, kind: str, stage: str = "parse", original: str = ""
) -> None:
    """One dead letter as drain_dead_letters would store it.

    `original` is the Pub/Sub message id of the dead-lettered delivery; by default each
    call is a different delivery (as when the same payload was published twice).
    """
    loadgen_id = ledger.loadgen_id(seq) if isinstance(seq, int) else seq
    original = original or f"orig-{seq}-{next(_DELIVERIES)}"
    ledger.add_dead_letters([StoredLetter(loadgen_id, kind, original, stage)])


def judge(ledger: Ledger, stored: dict[str, StoredRow]) -> Verdict:
    """What verify_once computes, with the table read replaced by `stored`."""
    verdict = Verdict(sent=ledger.counts().get("sent", 0))
    rows = iter(sorted(stored.items(), key=lambda item: item[0].encode()))
    judge_table(ledger.expected_rows("consent"), rows, verdict)
    judge_letters(ledger, verdict)
    return verdict


def counts(verdict: Verdict) -> tuple[int, int, int]:
    return verdict.lost, verdict.duplicated, verdict.unexpected


# --- rows -----------------------------------------------------------------------------------


def test_exact_match_is_all_zero(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services='["x"]', message_timestamp="t1"),
        row("a#1", T2, services='["y"]', message_timestamp="t2"),
        row("b#2", T1, services="[]", message_timestamp="t1"),
        row("b#2", T1, services="[]", message_timestamp="t1"),  # a duplicate publish
    )
    stored = {
        "a#1": {
            "cf1:services": {T2: '["y"]', T1: '["x"]'},
            "cf1:message_timestamp": {T2: "t2", T1: "t1"},
        },
        "b#2": {"cf1:services": {T1: "[]"}, "cf1:message_timestamp": {T1: "t1"}},
    }
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 0, 0)
    assert (verdict.sent, verdict.rows, verdict.deadletter) == (4, 2, 0)
    assert verdict.ok
    assert verdict.examples == []
    assert verdict.line() == "verify: sent=4 rows=2 deadletter=0 lost=0 duplicated=0 unexpected=0"


def test_missing_row_loses_every_message_of_that_key(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services="[]"),
        row("b#2", T1, services='["x"]'),
        row("b#2", T2, services='["y"]'),
        row("b#2", T2, services='["y"]'),
        row("c#3", T1, services="[]"),
    )
    stored = {"a#1": {"cf1:services": {T1: "[]"}}, "c#3": {"cf1:services": {T1: "[]"}}}
    verdict = judge(ledger, stored)
    assert counts(verdict) == (3, 0, 0)
    assert verdict.rows == 2
    assert not verdict.ok
    assert verdict.examples == ["lost: row b#2 missing (3 messages)"]


def test_superseded_version_collected_by_gc_is_not_lost(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services='["x"]', message_timestamp="t1"),
        row("a#1", T3, services='["z"]', message_timestamp="t3"),
        row("a#1", T2, services='["y"]', message_timestamp="t2"),  # out of order
    )
    stored = {"a#1": {"cf1:services": {T3: '["z"]'}, "cf1:message_timestamp": {T3: "t3"}}}
    assert counts(judge(ledger, stored)) == (0, 0, 0)


def test_newest_missing_but_older_present_is_lost(ledger: Ledger) -> None:
    seqs = record(
        ledger,
        row("a#1", T1, services='["x"]'),
        row("a#1", T2, services='["y"]'),
    )
    stored = {"a#1": {"cf1:services": {T1: '["x"]'}}}
    verdict = judge(ledger, stored)
    assert counts(verdict) == (1, 0, 0)
    assert verdict.examples == [f"lost: row a#1 lacks the cells of message {seqs[1]} @ {T2}"]


def test_newest_with_a_missing_column_or_a_wrong_value_is_lost(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services='["x"]', message_timestamp="t1"),
        row("b#2", T1, services='["x"]', message_timestamp="t1"),
    )
    stored = {
        "a#1": {"cf1:services": {T1: '["x"]'}},  # message_timestamp missing
        "b#2": {"cf1:services": {T1: '["WRONG"]'}, "cf1:message_timestamp": {T1: "t1"}},
    }
    assert counts(judge(ledger, stored)) == (2, 0, 0)


def test_version_superseded_by_a_present_newer_event_is_not_lost(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services="1"),
        row("a#1", T2, services="2"),
        row("a#1", T3, services="3"),
    )
    assert counts(judge(ledger, {"a#1": {"cf1:services": {T2: "2"}}})) == (1, 0, 0)


def test_extra_version_nobody_sent_is_duplicated(ledger: Ledger) -> None:
    record(
        ledger,
        row("a#1", T1, services='["x"]', message_timestamp="t1"),
        row("a#1", T2, services='["y"]', message_timestamp="t2"),
    )
    wall_clock = T3 + 123  # e.g. a retry that stamped the time of writing
    stored = {
        "a#1": {
            "cf1:services": {wall_clock: '["y"]', T2: '["y"]'},
            "cf1:message_timestamp": {T2: "t2"},
        }
    }
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 1, 0)
    assert verdict.examples == [
        f"duplicated: row a#1 cf1:services has versions [{wall_clock}] nobody sent"
    ]


def test_row_nobody_sent_is_unexpected(ledger: Ledger) -> None:
    record(ledger, row("b#2", T1, services="[]"))
    stored = {
        "a#0": {"cf1:services": {T1: "[]"}},
        "b#2": {"cf1:services": {T1: "[]"}},
        "z#9": {"cf1:services": {T2: "[]"}},
    }
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 0, 2)
    assert verdict.rows == 3  # rows counts what the table holds, expected or not
    assert verdict.examples == [
        "unexpected: row a#0 nobody sent",
        "unexpected: row z#9 nobody sent",
    ]


def test_unknown_column_is_unexpected(ledger: Ledger) -> None:
    record(ledger, row("a#1", T1, services="[]"))
    stored = {"a#1": {"cf1:services": {T1: "[]"}, "cf1:region": {T1: "eu"}}}
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 0, 1)
    assert verdict.examples == ["unexpected: column cf1:region in row a#1"]


def test_ingested_at_column_is_ignored(ledger: Ledger) -> None:
    record(ledger, row("a#1", T1, services="[]"), row("b#2", T2, services="[]"))
    stored = {
        "a#1": {"cf1:services": {T1: "[]"}, "cf1:ingested_at": {T1: "1795000000456"}},
        # Any family, any timestamp (it is a wall-clock reading, not an event).
        "b#2": {"cf1:services": {T2: "[]"}, "m:ingested_at": {T3: "x", T1: "y"}},
    }
    assert counts(judge(ledger, stored)) == (0, 0, 0)


def test_merge_join_of_interleaved_keys(ledger: Ledger) -> None:
    record(
        ledger,
        row("c#3", T1, services="c"),
        row("a#1", T1, services="a"),
        row("e#5", T1, services="e"),
        row("g#7", T1, services="g1"),
        row("g#7", T2, services="g2"),
    )
    stored = {
        "b#2": {"cf1:services": {T1: "b"}},  # unexpected
        "c#3": {"cf1:services": {T1: "c"}},
        "d#4": {"cf1:services": {T1: "d"}},  # unexpected
        "e#5": {"cf1:services": {T1: "e", T3: "e"}},  # duplicated 1
        "f#6": {"cf1:services": {T1: "f"}},  # unexpected
    }  # a#1 (1 message) and g#7 (2 messages) lost
    verdict = judge(ledger, stored)
    assert counts(verdict) == (3, 1, 3)
    assert verdict.rows == 5
    assert verdict.line() == "verify: sent=5 rows=5 deadletter=0 lost=3 duplicated=1 unexpected=3"


def test_key_order_is_bytewise_on_both_sides(ledger: Ledger) -> None:
    # Mixed case, punctuation and non-ASCII keys: SQLite's order must equal Bigtable's
    # (UTF-8 bytes) or the merge-join pairs the wrong rows.
    keys = ["b#1", "B#1", "a#1", "é#1", "z#1", "~#1", "日本#1", "a#10", "a#2", "\u00ff#1"]
    record(ledger, *(row(key, T1, services=key) for key in keys))
    ordered = [events[0].row_key for events in ledger.expected_rows("consent")]
    assert ordered == sorted(keys, key=str.encode)
    stored: dict[str, StoredRow] = {key: {"cf1:services": {T1: key}} for key in keys}
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 0, 0)
    assert verdict.rows == len(keys)


def test_messages_not_sent_are_not_expected(ledger: Ledger) -> None:
    seqs = record(
        ledger,
        row("a#1", T1, services="[]"),
        row("b#2", T1, services="[]"),
        letter("invalid_json"),
        failed=(1, 2),
    )
    ledger.add([(ledger.next_seq(), row("c#3", T1, services="[]"))])  # still pending
    verdict = judge(ledger, {"a#1": {"cf1:services": {T1: "[]"}}})
    assert counts(verdict) == (0, 0, 0)
    assert verdict.sent == 1
    assert ledger.counts() == {"sent": 1, "failed": 2, "pending": 1, "sent_row": 1}
    assert seqs == [0, 1, 2]


# --- dead letters ---------------------------------------------------------------------------


def test_dead_letter_expected_once_is_ok(ledger: Ledger) -> None:
    seqs = record(ledger, letter("invalid_json"), letter("missing_field"))
    deliver(ledger, seqs[0], "invalid_json")
    deliver(ledger, seqs[1], "missing_field")
    verdict = judge(ledger, {})
    assert counts(verdict) == (0, 0, 0)
    assert verdict.line() == "verify: sent=2 rows=0 deadletter=2 lost=0 duplicated=0 unexpected=0"


def test_dead_letter_twice_is_duplicated_once(ledger: Ledger) -> None:
    (seq,) = record(ledger, letter("not_utf8"))
    deliver(ledger, seq, "not_utf8")
    deliver(ledger, seq, "not_utf8")
    verdict = judge(ledger, {})
    assert counts(verdict) == (0, 1, 0)
    assert verdict.deadletter == 2
    assert verdict.examples == [f"duplicated: message {seq} dead-lettered 2 times"]


def test_same_delivery_dead_lettered_again_is_a_redelivery_not_a_duplicate(
    ledger: Ledger,
) -> None:
    # The pipeline died after publishing the dead letter and before acknowledging the
    # original: the original came back and was dead-lettered again (at-least-once).
    (seq,) = record(ledger, letter("not_utf8"))
    deliver(ledger, seq, "not_utf8", original="pubsub-41")
    deliver(ledger, seq, "not_utf8", original="pubsub-41")
    verdict = judge(ledger, {})
    assert counts(verdict) == (0, 0, 0)
    assert verdict.redelivered == 1
    assert verdict.deadletter == 2


def test_dead_letter_three_times_is_duplicated_twice(ledger: Ledger) -> None:
    (seq,) = record(ledger, letter("not_utf8"))
    for _ in range(3):
        deliver(ledger, seq, "not_utf8")
    assert counts(judge(ledger, {})) == (0, 2, 0)


def test_missing_dead_letter_is_lost(ledger: Ledger) -> None:
    seqs = record(ledger, letter("empty_payload"), letter("unknown_schema"))
    deliver(ledger, seqs[1], "unknown_schema")
    verdict = judge(ledger, {})
    assert counts(verdict) == (1, 0, 0)
    assert verdict.deadletter == 1
    assert verdict.examples == [f"lost: dead letter for message {seqs[0]} (empty_payload) missing"]


def test_dead_letter_with_the_wrong_kind_is_unexpected(ledger: Ledger) -> None:
    (seq,) = record(ledger, letter("missing_field"))
    deliver(ledger, seq, "invalid_field")
    verdict = judge(ledger, {})
    # The wrong letter is unexpected, and the letter with the right kind is still missing.
    assert counts(verdict) == (1, 0, 1)
    assert verdict.examples == [
        f"unexpected: message {seq} dead-lettered as invalid_field, expected missing_field",
        f"lost: dead letter for message {seq} (missing_field) missing",
    ]


@pytest.mark.parametrize(
    "foreign",
    ["0123456789ab:0", "", "garbage", ":0", "RUN:-1", "RUN:", "RUN:1x", "RUN:99"],
)
def test_dead_letter_from_another_run_or_malformed_is_unexpected(
    ledger: Ledger, foreign: str
) -> None:
    (seq,) = record(ledger, letter("invalid_json"))
    deliver(ledger, seq, "invalid_json")
    deliver(ledger, foreign.replace("RUN", ledger.run_id), "invalid_json")
    verdict = judge(ledger, {})
    assert counts(verdict) == (0, 0, 1)
    assert verdict.deadletter == 2


def test_dead_letter_with_a_unicode_digit_id_is_unexpected(ledger: Ledger) -> None:
    record(ledger, letter("invalid_json"))
    assert ledger.seq_of(f"{ledger.run_id}:\u00b2") is None


def test_row_message_arriving_as_a_dead_letter_is_unexpected(ledger: Ledger) -> None:
    seqs = record(ledger, row("a#1", T1, services="[]"), letter("invalid_json"))
    deliver(ledger, seqs[1], "invalid_json")
    deliver(ledger, seqs[0], "write_rejected", stage="write")
    verdict = Verdict()
    judge_letters(ledger, verdict)
    assert counts(verdict) == (0, 0, 1)
    assert verdict.examples == [
        f"unexpected: message {seqs[0]} dead-lettered (write_rejected), not stored"
    ]


def test_dead_letter_for_a_message_whose_publish_failed_is_unexpected(ledger: Ledger) -> None:
    (seq,) = record(ledger, letter("invalid_json"), failed=(0,))
    deliver(ledger, seq, "invalid_json")
    assert counts(judge(ledger, {})) == (0, 0, 1)


def test_judge_row_alone() -> None:
    events = [ExpectedEvent(0, "k", T1, {"cf1:a": "1"}), ExpectedEvent(1, "k", T2, {"cf1:a": "2"})]
    verdict = Verdict()
    judge_row(events, {"cf1:a": {T2: "2", T1: "1"}}, verdict)
    judge_row(events, None, verdict)
    assert counts(verdict) == (2, 0, 0)


# --- the report line ------------------------------------------------------------------------


def test_line_format_of_a_mixed_verdict(ledger: Ledger) -> None:
    seqs = record(
        ledger,
        row("a#1", T1, services="1"),  # stored
        row("b#2", T1, services="2"),  # lost
        letter("invalid_json"),  # delivered twice
        letter("missing_field"),  # lost
        letter("not_utf8"),  # delivered
    )
    deliver(ledger, seqs[2], "invalid_json")
    deliver(ledger, seqs[2], "invalid_json")
    deliver(ledger, seqs[4], "not_utf8")
    deliver(ledger, "someone-else:4", "not_utf8")
    stored = {"a#1": {"cf1:services": {T1: "1", T2: "1"}}, "x#0": {"cf1:services": {T1: "?"}}}
    verdict = judge(ledger, stored)
    line = verdict.line()
    assert line == "verify: sent=5 rows=2 deadletter=4 lost=2 duplicated=2 unexpected=2"
    match = LINE.match(line)
    assert match is not None
    assert [int(g) for g in match.groups()] == [5, 2, 4, 2, 2, 2]
    assert not verdict.ok


def test_verdict_keeps_at_most_twenty_examples() -> None:
    verdict = Verdict()
    for i in range(50):
        verdict.note(f"problem {i}")
    assert verdict.examples == [f"problem {i}" for i in range(20)]


# --- generated traffic through a perfect store ----------------------------------------------


def perfect_store(planned: list[Planned], group: str) -> dict[str, StoredRow]:
    """What Bigtable holds after a correct pipeline wrote every row message in order.

    A write to an existing (column, timestamp) replaces its value; nothing is collected.
    """
    stored: dict[str, StoredRow] = {}
    for p in planned:
        if p.expect == "row" and p.table_group == group:
            row = stored.setdefault(p.row_key, {})
            for column, value in p.cells.items():
                row.setdefault(column, {})[p.timestamp_micros] = value
    return stored


def judge_generated(ledger: Ledger, options: TrafficOptions) -> Verdict:
    clock = datetime(2026, 11, 24, 6, 40, 53, 123000, tzinfo=UTC)
    planned = list(islice(TrafficGenerator(options, clock=clock), 2000))
    record(ledger, *planned)
    verdict = Verdict(sent=ledger.counts()["sent"])
    for group in ("consent", "telemetry"):
        stored = perfect_store(planned, group)
        rows = iter(sorted(stored.items(), key=lambda item: item[0].encode()))
        judge_table(ledger.expected_rows(group), rows, verdict)
    return verdict


@pytest.mark.parametrize(
    "mix",
    [{"consent.v1": 1.0}, {"consent.v2": 1.0}, {"telemetry.v1": 1.0}],
    ids=["consent.v1", "consent.v2", "telemetry.v1"],
)
def test_perfect_pipeline_verifies_clean_on_colliding_traffic(
    ledger: Ledger, mix: dict[str, float]
) -> None:
    # Few users/devices, a fixed clock and a short late window: many events per key, many
    # sharing a key and a millisecond, some out of order.
    options = TrafficOptions(
        seed=31, schema_mix=mix, users=3, devices=3, late_ratio=0.7, out_of_order_seconds=2.0
    )
    verdict = judge_generated(ledger, options)
    assert counts(verdict) == (0, 0, 0), verdict.examples
    assert verdict.sent == 2000


def test_perfect_pipeline_verifies_clean_on_mixed_consent_versions(ledger: Ledger) -> None:
    options = TrafficOptions(
        seed=31,
        schema_mix={"consent.v1": 1.0, "consent.v2": 1.0},
        users=3,
        late_ratio=0.7,
        out_of_order_seconds=2.0,
    )
    verdict = judge_generated(ledger, options)
    assert counts(verdict) == (0, 0, 0), verdict.examples


def test_too_late_notice_for_a_stored_row_is_not_unexpected(ledger: Ledger) -> None:
    # The rollups dead-letter an event too late for its window, but its row was written.
    (seq,) = record(ledger, row("a.example.com#u1", 1_000, services='["essential-1"]'))
    deliver(ledger, seq, "too_late", stage="rollup")
    stored = {"a.example.com#u1": {"cf1:services": {1_000: '["essential-1"]'}}}
    verdict = judge(ledger, stored)
    assert counts(verdict) == (0, 0, 0)
    assert verdict.too_late == 1


# --- rows stamped with their publish time (--missing_event_time=publish_time) --------------

# Published between T1 and T1 + 20 ms; the stamp cell must be the version's own timestamp.
INSIDE = T1 + 7_000  # 7 ms into the window
INSIDE_TEXT = "2026-11-18T11:06:40.007Z"  # T1 is 1795000000 s = 2026-11-18T11:06:40Z


def published(key: str, services: str) -> Planned:
    return row(key, PUBLISH_TIME, services=services)


def test_publish_stamped_row_inside_its_window_is_all_zero(ledger: Ledger) -> None:
    record(ledger, published("a#1", '["x"]'))
    stored = {
        "a#1": {"cf1:services": {INSIDE: '["x"]'}, "cf1:message_timestamp": {INSIDE: INSIDE_TEXT}}
    }
    assert counts(judge(ledger, stored)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("ts", "stamp", "services"),
    [
        pytest.param(T1 + 3_000_000, "2026-11-18T11:06:43.000Z", '["x"]', id="after-the-window"),
        pytest.param(T1 - 2_000_000, "2026-11-18T11:06:38.000Z", '["x"]', id="before-the-window"),
        pytest.param(INSIDE, "2026-11-18T11:06:40.008Z", '["x"]', id="stamp-is-not-the-ts"),
        pytest.param(INSIDE, INSIDE_TEXT, '["y"]', id="other-services"),
    ],
)
def test_publish_stamped_row_outside_or_inconsistent_is_lost(
    ledger: Ledger, ts: int, stamp: str, services: str
) -> None:
    record(ledger, published("a#1", '["x"]'))
    stored = {"a#1": {"cf1:services": {ts: services}, "cf1:message_timestamp": {ts: stamp}}}
    verdict = judge(ledger, stored)
    assert verdict.lost == 1
    assert verdict.examples[0].startswith("lost: row a#1 lacks the cells of message 0")


def test_publish_stamped_row_with_a_second_version_is_duplicated(ledger: Ledger) -> None:
    record(ledger, published("a#1", '["x"]'))
    later = INSIDE + 1_000
    stored = {
        "a#1": {
            "cf1:services": {INSIDE: '["x"]', later: '["x"]'},
            "cf1:message_timestamp": {INSIDE: INSIDE_TEXT, later: "2026-11-18T11:06:40.008Z"},
        }
    }
    assert counts(judge(ledger, stored)) == (0, 2, 0)


# --- replayed lines the oracle cannot map: a dead letter of any kind -------------------------


def test_a_dead_letter_of_any_kind_satisfies_an_unmappable_line(ledger: Ledger) -> None:
    (first, second) = record(ledger, letter(ANY_KIND), letter(ANY_KIND))
    deliver(ledger, first, "invalid_json")
    verdict = judge(ledger, {})
    assert counts(verdict) == (1, 0, 0)  # the second one's letter is missing
    deliver(ledger, second, "unknown_service")
    assert counts(judge(ledger, {})) == (0, 0, 0)
