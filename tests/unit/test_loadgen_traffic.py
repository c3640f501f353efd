"""TrafficGenerator and from_file: reproducible traffic whose expectations the pipeline meets."""

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path

import pytest

from loadgen.expect import PUBLISH_TIME
from loadgen.traffic import (
    ANY_KIND,
    INVALID_KINDS,
    Planned,
    Replay,
    TrafficGenerator,
    TrafficOptions,
    from_file,
    planned_row,
)
from schemas.base import epoch_millis
from stream.pipeline.messages import DeadLetter, RawMessage, ValidEvent
from stream.pipeline.validate import ParseRules, validate

# Whole milliseconds, so "older than the clock" is measured without truncation noise.
CLOCK = datetime(2026, 11, 24, 6, 40, 53, 123000, tzinfo=UTC)
CLOCK_MICROS = epoch_millis(CLOCK) * 1000
SAMPLE = 5000
SEED_CATALOG = Path(__file__).parents[1] / "fixtures" / "seed-service-catalog.txt"


def take(options: TrafficOptions, count: int, clock: datetime = CLOCK) -> list[Planned]:
    return list(islice(TrafficGenerator(options, clock=clock), count))


def as_tuple(p: Planned) -> tuple[object, ...]:
    """Everything a Planned carries, in a comparable form."""
    return (
        p.data,
        sorted(p.attributes.items()),
        p.schema,
        p.expect,
        p.table_group,
        p.row_key,
        p.timestamp_micros,
        sorted(p.cells.items()),
        p.reason,
        p.duplicate_of,
    )


def through_pipeline(p: Planned, now: datetime, rules: ParseRules | None = None) -> object:
    raw = RawMessage(data=p.data, attributes=dict(p.attributes), message_id="m")
    return validate(raw, rules or ParseRules(), now)


def share(items: list[Planned], predicate: Callable[[Planned], bool]) -> float:
    return sum(1 for p in items if predicate(p)) / len(items)


# --- determinism ----------------------------------------------------------------------------

MIXED = TrafficOptions(
    seed=42, invalid_ratio=0.1, duplicate_ratio=0.05, late_ratio=0.2, users=500, devices=50
)


def test_same_seed_and_clock_give_identical_sequences() -> None:
    first = [as_tuple(p) for p in take(MIXED, 2000)]
    second = [as_tuple(p) for p in take(MIXED, 2000)]
    assert first == second  # data (bytes), attributes and every expectation
    # The sequence really exercises the knobs.
    assert {t[3] for t in first} == {"row", "deadletter"}
    assert any(t[9] == -1 for t in first)


def test_a_different_seed_gives_a_different_sequence() -> None:
    first = take(MIXED, 2000)
    other = take(replace(MIXED, seed=43), 2000)
    differing = sum(1 for a, b in zip(first, other, strict=True) if a.data != b.data)
    assert differing > 1900  # not merely a shifted copy: almost every message differs


# --- the knobs, statistically ---------------------------------------------------------------


MIX = {"consent.v1": 0.5, "consent.v2": 0.3, "telemetry.v1": 0.2}
KNOBS = TrafficOptions(
    seed=7, schema_mix=MIX, invalid_ratio=0.1, duplicate_ratio=0.05, late_ratio=0.2
)


@pytest.fixture(scope="module")
def sample() -> list[Planned]:
    """5,000 messages with every knob set (generated once: ~0.5 s)."""
    return take(KNOBS, SAMPLE)


def originals(planned: list[Planned]) -> list[Planned]:
    return [p for p in planned if p.duplicate_of is None]


def test_invalid_ratio(sample: list[Planned]) -> None:
    assert share(sample, lambda p: p.expect == "deadletter") == pytest.approx(0.1, abs=0.02)
    for p in sample:
        assert p.expect in {"row", "deadletter"}
        assert (p.expect == "deadletter") == bool(p.reason)


@pytest.mark.parametrize(("ratio", "expect"), [(0.0, {"row"}), (1.0, {"deadletter"})])
def test_invalid_ratio_extremes(ratio: float, expect: set[str]) -> None:
    planned = take(TrafficOptions(seed=7, invalid_ratio=ratio), 500)
    assert {p.expect for p in planned} == expect


def test_duplicate_ratio_and_duplicates_repeat_the_previous_message(
    sample: list[Planned],
) -> None:
    assert sample[0].duplicate_of is None  # nothing to duplicate yet
    assert share(sample, lambda p: p.duplicate_of == -1) == pytest.approx(0.05, abs=0.02)
    duplicates = 0
    for previous, p in pairwise(sample):
        if p.duplicate_of == -1:
            duplicates += 1
            assert p.data == previous.data
            assert p.attributes == previous.attributes
            assert (p.expect, p.reason, p.row_key, p.timestamp_micros, p.cells) == (
                previous.expect,
                previous.reason,
                previous.row_key,
                previous.timestamp_micros,
                previous.cells,
            )
        else:
            assert p.duplicate_of is None
    # Duplicates of dead letters are duplicates too (the pipeline must dead-letter both).
    assert any(p.duplicate_of == -1 and p.expect == "deadletter" for p in sample)
    assert duplicates > 100


def test_no_duplicates_without_the_knob() -> None:
    assert all(p.duplicate_of is None for p in take(TrafficOptions(seed=8), 1000))


def test_late_ratio(sample: list[Planned]) -> None:
    rows = [p for p in sample if p.expect == "row"]
    ages = [(CLOCK_MICROS - p.timestamp_micros) / 1e6 for p in rows]
    assert all(age >= 0 for age in ages)  # never in the future
    late = [age for age in ages if age >= 1.0]
    assert len(late) / len(rows) == pytest.approx(0.2, abs=0.02)
    # The rest carry the clock itself; late ones spread over the whole default 600 s window.
    # (+1 ms: event times are truncated to whole milliseconds after the offset is drawn.)
    assert all(age == 0 for age in ages if age < 1.0)
    assert all(age <= 600.0 + 0.001 for age in late)
    assert max(late) > 570 and min(late) < 31


@pytest.mark.parametrize(("ratio", "window"), [(0.0, 600.0), (0.5, 30.0)])
def test_late_ratio_and_out_of_order_window(ratio: float, window: float) -> None:
    planned = take(
        TrafficOptions(seed=9, late_ratio=ratio, out_of_order_seconds=window, users=100), 1000
    )
    ages = [(CLOCK_MICROS - p.timestamp_micros) / 1e6 for p in planned]
    late = [age for age in ages if age >= 1.0]
    assert len(late) / len(ages) == pytest.approx(ratio, abs=0.05)
    assert all(age == 0 for age in ages if age < 1.0)
    assert all(age <= window + 0.001 for age in late)


def test_schema_mix_shares(sample: list[Planned]) -> None:
    # Invalid messages are always consent.v1 bodies: the mix applies to the valid ones.
    valid = [p for p in originals(sample) if p.expect == "row"]
    counts = Counter(p.schema for p in valid)
    assert set(counts) == set(MIX)
    for schema, weight in MIX.items():
        assert counts[schema] / len(valid) == pytest.approx(weight, abs=0.02), schema
    for p in valid:
        assert p.attributes == {"schema": p.schema}
        assert p.table_group == ("telemetry" if p.schema == "telemetry.v1" else "consent")


def test_schema_mix_with_a_zero_weight_never_produces_that_schema() -> None:
    planned = take(TrafficOptions(seed=11, schema_mix={"consent.v2": 1, "telemetry.v1": 0}), 500)
    assert {p.schema for p in planned} == {"consent.v2"}


@pytest.mark.parametrize(
    "mix", [{}, {"consent.v9": 1.0}, {"consent.v1": -1.0, "consent.v2": 2.0}, {"consent.v1": 0}]
)
def test_bad_schema_mix_is_rejected(mix: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="--schema-mix"):
        TrafficGenerator(TrafficOptions(schema_mix=mix))


# --- the contract with the pipeline ---------------------------------------------------------


def test_every_invalid_kind_fails_validation_with_exactly_that_kind() -> None:
    options = TrafficOptions(seed=12, invalid_ratio=1.0, late_ratio=0.3)
    planned = take(options, 3000)
    rules = ParseRules(max_message_bytes=options.max_message_bytes)
    kinds: Counter[str] = Counter()
    for p in planned:
        assert p.expect == "deadletter"
        outcome = through_pipeline(p, CLOCK, rules)
        assert isinstance(outcome, DeadLetter), (p.reason, p.data[:200])
        assert str(outcome.kind) == p.reason, (p.reason, outcome.error)
        kinds[p.reason] += 1
    assert set(kinds) == set(INVALID_KINDS)  # every kind was exercised


def test_every_valid_message_validates_to_its_expected_row() -> None:
    options = TrafficOptions(seed=13, late_ratio=0.3, duplicate_ratio=0.05)
    planned = take(options, 3000)
    schemas: Counter[str] = Counter()
    for p in planned:
        assert p.expect == "row"
        outcome = through_pipeline(p, CLOCK)
        assert isinstance(outcome, ValidEvent), outcome
        event = outcome.event
        assert event.table.group == p.table_group
        assert event.row_key() == p.row_key
        assert event.timestamp_micros() == p.timestamp_micros
        assert {f"{c.family}:{c.qualifier.decode()}": c.value.decode() for c in event.cells()} == (
            p.cells
        )
        schemas[p.schema] += 1
    assert set(schemas) == {"consent.v1", "consent.v2", "telemetry.v1"}


def test_planned_row_of_a_hand_written_body() -> None:
    body: dict[str, object] = {
        "user": "0B5F8A8E-3D4C-4F4E-9A57-1C2D3E4F5A6B",
        "domain": "Shop.Example.com",
        "services": ["essential-1", "web_performance_and_analytics-2"],
        "message_timestamp": "2026-11-24T07:40:53.123456+01:00",
    }
    p = planned_row("consent.v1", body)
    assert p.expect == "row"
    assert p.row_key == "shop.example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
    assert p.timestamp_micros == CLOCK_MICROS
    assert p.cells == {
        "cf1:services": '["essential-1","web_performance_and_analytics-2"]',
        "cf1:message_timestamp": "2026-11-24T06:40:53.123Z",
    }
    assert json.loads(p.data) == body


def test_consent_traffic_has_the_seeds_shape() -> None:
    """The seed's five domains and 25 ids (written out in a fixture), any subset size 0-24."""
    seed_ids = set(SEED_CATALOG.read_text().split("\n")[1:-1])
    assert len(seed_ids) == 25
    planned = take(TrafficOptions(seed=21, schema_mix={"consent.v1": 1.0}), 3000)
    bodies = [json.loads(p.data) for p in planned]
    assert {b["domain"] for b in bodies} == {
        "codecentric.de",
        "codecentric.com",
        "devdriday.net",
        "example.com",
        "onlineshoppingmania.de",
    }
    sizes = Counter(len(b["services"]) for b in bodies)
    assert set().union(*(b["services"] for b in bodies)) == seed_ids
    assert all(len(set(b["services"])) == len(b["services"]) for b in bodies)  # distinct
    assert sizes[0] > 0 and max(sizes) <= 24  # empty lists are normal
    # every form of message_timestamp the seed's function writes, or epoch milliseconds
    stamps = {type(b["message_timestamp"]) for b in bodies}
    assert stamps == {str, int}
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", b["message_timestamp"])
        for b in bodies
        if isinstance(b["message_timestamp"], str)
    )


@pytest.mark.parametrize(
    "schema_mix",
    [{"consent.v1": 1.0}, {"consent.v2": 1.0}, {"telemetry.v1": 1.0}],
    ids=["consent.v1", "consent.v2", "telemetry.v1"],
)
def test_same_key_and_millisecond_carry_identical_cells(schema_mix: dict[str, float]) -> None:
    # One user / one device and a fixed clock: every message collides on (key, ms).
    planned = take(TrafficOptions(seed=14, schema_mix=schema_mix, users=1, devices=1), 200)
    assert len({(p.row_key, p.timestamp_micros) for p in planned}) == 1
    assert len({json.dumps(p.cells, sort_keys=True) for p in planned}) == 1


def test_late_collisions_carry_identical_cells() -> None:
    # Late events over a 2 s window give many (key, ms) collisions at many different ms.
    options = TrafficOptions(
        seed=15, schema_mix={"consent.v1": 1.0}, users=2, late_ratio=1.0, out_of_order_seconds=2
    )
    by_key_ms: dict[tuple[str, int], set[str]] = {}
    for p in take(options, 5000):
        by_key_ms.setdefault((p.row_key, p.timestamp_micros), set()).add(
            json.dumps(p.cells, sort_keys=True)
        )
    assert len(by_key_ms) < 5000  # there were collisions
    assert all(len(cells) == 1 for cells in by_key_ms.values())


def test_consent_v1_and_v2_agree_on_shared_columns_for_the_same_key_and_millisecond() -> None:
    options = TrafficOptions(seed=3, users=1, schema_mix={"consent.v1": 1, "consent.v2": 1})
    planned = take(options, 50)
    v1 = next(p for p in planned if p.schema == "consent.v1")
    v2 = next(p for p in planned if p.schema == "consent.v2")
    assert (v1.row_key, v1.timestamp_micros) == (v2.row_key, v2.timestamp_micros)
    shared = set(v1.cells) & set(v2.cells)
    assert shared == {"cf1:services", "cf1:message_timestamp"}
    assert {c: v1.cells[c] for c in shared} == {c: v2.cells[c] for c in shared}


def test_out_of_order_beyond_the_pipelines_event_age_is_refused() -> None:
    # Late events older than the pipeline's max event age (7 days by default) would be
    # planned as rows but dead-lettered as event_time_out_of_range: refuse such options.
    with pytest.raises(ValueError, match="out-of-order-seconds"):
        TrafficOptions(
            seed=16, late_ratio=1.0, out_of_order_seconds=timedelta(days=8).total_seconds()
        )
    options = TrafficOptions(
        seed=16, late_ratio=1.0, out_of_order_seconds=timedelta(days=6).total_seconds()
    )
    for p in take(options, 200):
        assert p.expect == "row"
        assert isinstance(through_pipeline(p, CLOCK), ValidEvent)


# --- from_file ------------------------------------------------------------------------------

USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
REPLAY_CLOCK = CLOCK  # 2026-11-24T06:40:53.123Z


def replay(path: Path, **options: object) -> list[Planned]:
    return list(from_file(path, Replay(**options), clock=REPLAY_CLOCK))  # type: ignore[arg-type]


def test_replayed_seed_lines_are_stamped_as_scale_endpoint_did(tmp_path: Path) -> None:
    request = {"user": USER, "domain": "devdriday.net", "services": ["marketing-3"]}
    path = tmp_path / "requests-0.jsonl"
    path.write_text(json.dumps(request) + "\n" + json.dumps({**request, "services": []}))

    first, second = replay(path, stamp=True)

    # the seed function's output: the same JSON (default separators) plus message_timestamp
    assert first.data == (
        b'{"user": "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b", "domain": "devdriday.net", '
        b'"services": ["marketing-3"], "message_timestamp": "2026-11-24T06:40:53.123Z"}'
    )
    assert (first.expect, first.row_key, first.timestamp_micros) == (
        "row",
        f"devdriday.net#{USER}",
        CLOCK_MICROS,
    )
    assert first.cells == {
        "cf1:services": '["marketing-3"]',
        "cf1:message_timestamp": "2026-11-24T06:40:53.123Z",
    }
    assert second.cells["cf1:services"] == "[]"


def test_unstamped_seed_lines_expect_their_publish_time(tmp_path: Path) -> None:
    line = json.dumps({"user": USER, "domain": "example.com", "services": ["essential-2"]})
    path = tmp_path / "requests-0.jsonl"
    path.write_text(line + "\n")
    (planned,) = replay(path)
    assert planned.data == line.encode()  # sent exactly as the file has it
    assert (planned.row_key, planned.timestamp_micros) == (f"example.com#{USER}", PUBLISH_TIME)
    assert planned.cells == {"cf1:services": '["essential-2"]'}  # + the publish-time stamp


def test_replay_of_lines_the_oracle_cannot_map(tmp_path: Path) -> None:
    stamped = {
        "user": USER,
        "domain": "example.com",
        "services": ["essential-1"],
        "message_timestamp": "2026-11-24T06:40:00Z",
    }
    lines = [
        json.dumps(stamped).encode() + b"\r\n",  # CRLF line end
        b"\n",  # blank
        b"   \t \n",  # whitespace only
        b'{"user": "' + USER.encode() + b'", "domain": \n',  # broken JSON
        b"[1, 2]\n",  # not an object
        json.dumps({**stamped, "services": "essential-1"}).encode() + b"\n",  # wrong type
        json.dumps({**stamped, "user": "nope"}).encode() + b"\n",
        json.dumps({**stamped, "message_timestamp": "2001-02-03T04:05:06Z"}).encode() + b"\n",
        json.dumps({**stamped, "pad": "x" * 70_000}).encode() + b"\n",
        json.dumps({**stamped, "message_timestamp": 1_795_502_400}).encode(),  # no newline
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(lines))

    planned = replay(path, stamp=True)

    assert [(p.expect, p.reason) for p in planned] == [
        ("row", ""),
        ("deadletter", ANY_KIND),
        ("deadletter", ANY_KIND),
        ("deadletter", ANY_KIND),
        ("deadletter", ANY_KIND),
        ("deadletter", "event_time_out_of_range"),
        ("deadletter", "payload_too_large"),
        ("row", ""),
    ]
    assert planned[0].data == json.dumps(stamped).encode()  # line end stripped, nothing else
    assert planned[0].timestamp_micros == 1_795_502_400_000_000  # 06:40:00Z
    assert planned[-1].timestamp_micros == 1_795_502_400_000_000  # epoch seconds
    for p in planned:
        assert (p.schema, p.attributes, p.duplicate_of) == (
            "consent.v1",
            {"schema": "consent.v1"},
            None,
        )


def test_replay_with_another_schema(tmp_path: Path) -> None:
    body = {
        "device_id": "sensor-7",
        "recorded_at": "2026-11-24T06:40:23.123Z",  # 30 s before the clock
        "readings": {"temperature_c": 21.5, "battery_v": 3},
        "firmware": "1.2.3",
    }
    path = tmp_path / "telemetry.jsonl"
    path.write_text(json.dumps(body) + "\n")
    (planned,) = replay(path, schema="telemetry.v1")
    assert (planned.schema, planned.expect) == ("telemetry.v1", "row")
    assert planned.attributes == {"schema": "telemetry.v1"}
    assert planned.row_key == "sensor-7#1795502423123"
    assert planned.cells == {
        "m:firmware": "1.2.3",
        "m:recorded_at": "2026-11-24T06:40:23.123Z",
        "r:temperature_c": "21.5",
        "r:battery_v": "3.0",
    }


def test_replay_of_only_blank_lines_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\r\n  \n")
    assert replay(path) == []
