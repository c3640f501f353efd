"""unknown_service traffic, and the ledger told that its letters now become rows."""

import json
from collections import Counter
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest

from loadgen.ledger import Ledger, StoredLetter
from loadgen.readback import StoredRow
from loadgen.seed import SEED_SERVICES
from loadgen.traffic import (
    Planned,
    TrafficGenerator,
    TrafficOptions,
    unknown_service_ids,
)
from loadgen.verify import Verdict, judge_letters, judge_table
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, ValidEvent
from stream.pipeline.validate import ParseRules, validate

CLOCK = datetime(2026, 11, 24, 6, 40, 53, 123000, tzinfo=UTC)
SEED = frozenset(SEED_SERVICES)
# The seed's categories with the number 6: well-formed, outside the seed's 25.
OUTSIDE = [
    "essential-6",
    "web_performance_and_analytics-6",
    "functional-6",
    "personalization-6",
    "marketing-6",
]


def take(options: TrafficOptions, count: int) -> list[Planned]:
    return list(islice(TrafficGenerator(options, clock=CLOCK), count))


def outcome(p: Planned, catalog: frozenset[str]) -> object:
    raw = RawMessage(data=p.data, attributes=dict(p.attributes), message_id="m")
    return validate(raw, ParseRules(service_catalog=catalog), CLOCK)


def test_unknown_ids_are_well_formed_and_outside_the_catalog() -> None:
    assert unknown_service_ids(SEED) == OUTSIDE
    assert unknown_service_ids(SEED | {"essential-6", "marketing-6"}, count=4) == [
        "web_performance_and_analytics-6",
        "functional-6",
        "personalization-6",
        "essential-7",
    ]


def test_unknown_service_messages_are_refused_then_become_their_rows() -> None:
    options = TrafficOptions(
        seed=5,
        unknown_service_ratio=0.3,
        invalid_ratio=0.05,
        schema_mix={"consent.v1": 1.0, "consent.v2": 1.0, "telemetry.v1": 1.0},
    )
    planned = take(options, 3000)
    reasons = Counter(p.reason for p in planned if p.expect == "deadletter")
    unknown = [p for p in planned if p.reason == "unknown_service"]
    consent = sum(1 for p in planned if p.schema.startswith("consent") and p.expect == "row")
    assert 0.25 < len(unknown) / (len(unknown) + consent) < 0.35
    named: Counter[str] = Counter()
    for p in unknown:
        refused = outcome(p, SEED)
        assert isinstance(refused, DeadLetter), refused
        assert refused.kind is ErrorKind.UNKNOWN_SERVICE, refused.error
        accepted = outcome(p, SEED | set(OUTSIDE))
        assert isinstance(accepted, ValidEvent), accepted
        cells = {
            f"{c.family}:{c.qualifier.decode()}": c.value.decode() for c in accepted.event.cells()
        }
        assert (accepted.event.row_key(), accepted.event.timestamp_micros(), cells) == (
            p.row_key,
            p.timestamp_micros,
            p.cells,
        )
        body = json.loads(p.data)
        ids = [s if isinstance(s, str) else s["id"] for s in body["services"]]
        named.update(set(ids) - SEED)
    assert set(named) == set(OUTSIDE)
    assert {p.schema for p in unknown} == {"consent.v1", "consent.v2"}
    # every other invalid message keeps its own kind (a catalog change cannot fix those)
    for p in planned:
        if p.expect == "deadletter" and p.reason != "unknown_service":
            refused = outcome(p, SEED)
            assert isinstance(refused, DeadLetter) and str(refused.kind) == p.reason
    assert reasons["unknown_service"] == len(unknown)


def _without(body: dict[str, object], ids: set[str]) -> dict[str, object]:
    services = body["services"]
    assert isinstance(services, list)
    kept = [s for s in services if (s if isinstance(s, str) else s["id"]) not in ids]
    return {**body, "services": kept}


def test_the_knob_only_adds_an_id_everything_else_is_the_same_traffic() -> None:
    mix = {"consent.v1": 1.0, "consent.v2": 1.0, "telemetry.v1": 1.0}
    plain = take(TrafficOptions(seed=8, invalid_ratio=0.1, late_ratio=0.3, schema_mix=mix), 2000)
    knob = TrafficOptions(
        seed=8, invalid_ratio=0.1, late_ratio=0.3, schema_mix=mix, unknown_service_ratio=0.2
    )
    changed = 0
    for before, after in zip(plain, take(knob, 2000), strict=True):
        if after.reason != "unknown_service":
            assert after == before
            continue
        changed += 1
        assert _without(json.loads(after.data), set(OUTSIDE)) == json.loads(before.data)
        assert (after.row_key, after.timestamp_micros) == (before.row_key, before.timestamp_micros)
    assert changed > 100


def test_same_key_and_millisecond_still_carry_identical_content() -> None:
    planned = take(
        TrafficOptions(seed=9, unknown_service_ratio=0.5, users=1, schema_mix={"consent.v1": 1}),
        200,
    )
    assert len({(p.row_key, p.timestamp_micros) for p in planned}) == 1
    assert len({(p.data, p.expect) for p in planned}) == 1


def test_a_catalog_without_the_seeds_services_is_refused() -> None:
    with pytest.raises(ValueError, match="the catalog must list them"):
        TrafficOptions(service_catalog=frozenset(SEED_SERVICES[:-1]))
    with pytest.raises(ValueError, match="unknown_service_ratio must be between 0 and 1"):
        TrafficOptions(unknown_service_ratio=1.5)


# --- the ledger ------------------------------------------------------------------------


def stored(planned: list[Planned]) -> dict[str, StoredRow]:
    """A perfect table of every planned row (after the catalog was extended)."""
    table: dict[str, StoredRow] = {}
    for p in planned:
        row = table.setdefault(p.row_key, {})
        for column, value in p.cells.items():
            row.setdefault(column, {})[p.timestamp_micros] = value
    return table


def judged(ledger: Ledger, table: dict[str, StoredRow]) -> Verdict:
    verdict = Verdict(sent=ledger.counts().get("sent", 0))
    rows = iter(sorted(table.items(), key=lambda item: item[0].encode()))
    judge_table(ledger.expected_rows("consent"), rows, verdict)
    judge_letters(ledger, verdict)
    return verdict


def test_told_the_new_expectation_the_ledger_verifies_the_rows(tmp_path: Path) -> None:
    options = TrafficOptions(seed=6, unknown_service_ratio=1.0, schema_mix={"consent.v1": 1.0})
    planned = take(options, 40)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add(enumerate(planned))
        ledger.settle([(seq, f"mid-{seq}", 0, 1) for seq in range(40)], [])
        # before the fix: 40 dead letters expected, none drained, no rows
        before = judged(ledger, {})
        assert (before.lost, before.unexpected) == (40, 0)
        # ten letters were drained before the redrive (e.g. by an earlier verify)
        ledger.add_dead_letters(
            StoredLetter(
                ledger.loadgen_id(seq), "unknown_service", f"orig-{seq}", "parse", f"d{seq}"
            )
            for seq in range(10)
        )
        assert ledger.expect_rows_for("unknown_service") == 40
        assert ledger.expect_rows_for("unknown_service") == 0  # once
        assert ledger.redriven() == {seq: "unknown_service" for seq in range(40)}
        missing = judged(ledger, {})
        assert (missing.lost, missing.duplicated, missing.unexpected) == (40, 0, 0)
        verdict = judged(ledger, stored(planned))
        assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (0, 0, 0), verdict.examples
        assert (verdict.rows, verdict.deadletter, verdict.history) == (
            len({p.row_key for p in planned}),
            10,
            10,
        )


def test_a_letter_of_another_kind_is_still_unexpected_after_the_change(tmp_path: Path) -> None:
    planned = take(
        TrafficOptions(seed=6, unknown_service_ratio=1.0, schema_mix={"consent.v1": 1}), 2
    )
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add(enumerate(planned))
        ledger.settle([(0, "m0", 0, 1), (1, "m1", 0, 1)], [])
        ledger.expect_rows_for("unknown_service")
        ledger.add_dead_letters(
            [StoredLetter(ledger.loadgen_id(0), "missing_field", "orig-0", "parse", "d0")]
        )
        verdict = judged(ledger, stored(planned))
        assert (verdict.lost, verdict.unexpected, verdict.history) == (0, 1, 0)


def test_only_messages_with_a_planned_row_change(tmp_path: Path) -> None:
    invalid = Planned(
        b"{", {"schema": "consent.v1"}, "consent.v1", "deadletter", reason="unknown_service"
    )
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.add([(0, invalid)])
        ledger.settle([(0, "m0", 0, 1)], [])
        assert ledger.expect_rows_for("unknown_service") == 0
        assert ledger.expected_letters() == {0: "unknown_service"}
