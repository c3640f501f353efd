"""Each composite transform alone: Create or TestStream in, assert_that on its outputs.

In the style of Beam's `examples/complete/game/leader_board_test.py`. Everything runs on the
BundleBasedDirectRunner (streaming where a TestStream drives the watermark). The rollups'
Prism-specific shape (millisecond expiries, state kept in the global window) is exercised on
Prism by tests/pipeline/test_rollups.py; what is asserted here does not depend on the runner.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.consent import ConsentV1
from schemas.telemetry import TelemetryV1
from stream.pipeline.acknowledge import Acknowledge
from stream.pipeline.deadletters import DeadLetters
from stream.pipeline.event_time import AssignEventTime
from stream.pipeline.io.no_acks import no_acknowledgement
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage, ValidEvent, Written
from stream.pipeline.parse import ParseAndValidate
from stream.pipeline.rollups.accumulate import Accumulate
from stream.pipeline.rollups.accumulators import ConsentAccumulator, TelemetryAccumulator
from stream.pipeline.rollups.facts import ConsentFact, Member, TelemetryFact, digest, member
from stream.pipeline.rollups.gate import TOO_LATE, Gate
from stream.pipeline.rollups.preaggregate import PreAggregate
from stream.pipeline.rollups.rows import RollupRow
from stream.pipeline.rollups.transform import Rollups
from stream.pipeline.validate import ParseRules
from tests.helpers.builders import consent_body, raw, telemetry_body

# Parsing refuses events older than 7 days, so parse inputs happened five minutes ago, at
# .789123 s: the microseconds show whether the event time is truncated to the millisecond.
SECOND = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
SECOND_MS = int(SECOND.timestamp()) * 1000
EVENT_TIME = SECOND + timedelta(microseconds=789_123)
EVENT_MS = SECOND_MS + 789  # EVENT_TIME truncated (not rounded) to the millisecond

# The rollups check no event age: a fixed, window-aligned minute keeps their values literal.
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T0_US = 1_740_830_400_000_000  # T0 in epoch microseconds
WINDOW = timedelta(seconds=60)
LATENESS = timedelta(seconds=120)  # so window [T0, T0+60 s) expires at T0+180 s (less 1 ms)

USER_A = "00000000-0000-4000-8000-00000000000a"
USER_B = "00000000-0000-4000-8000-00000000000b"
USER_C = "00000000-0000-4000-8000-00000000000c"
SHOP = "shop.example.com"


# --- builders -----------------------------------------------------------------------------


def consent(
    user: str = USER_A,
    event_time: datetime = EVENT_TIME,
    services: tuple[str, ...] = ("essential-1",),
) -> dict[str, Any]:
    return consent_body(user, SHOP, list(services), event_time)


def message(
    body: dict[str, Any] | bytes, message_id: str, ack_id: str | None = None, **attributes: str
) -> RawMessage:
    """A RawMessage as a source reads it (publish time and, optionally, an ack id)."""
    return raw(
        body, attributes=attributes, message_id=message_id, publish_time=SECOND, ack_id=ack_id
    )


def consent_event(raw: RawMessage) -> ValidEvent:
    return ValidEvent(event=ConsentV1.model_validate_json(raw.data), raw=raw)


def telemetry_event(raw: RawMessage) -> ValidEvent:
    return ValidEvent(event=TelemetryV1.model_validate_json(raw.data), raw=raw)


def at(moment: datetime) -> Timestamp:
    return Timestamp.from_utc_datetime(moment)


def t0_plus(seconds: float) -> Timestamp:
    return at(T0 + timedelta(seconds=seconds))


def consent_at(
    user: str, seconds: float, message_id: str, service: str, **attributes: str
) -> TimestampedValue:
    """A valid consent event of SHOP at T0 + seconds, stamped with its event time."""
    moment = T0 + timedelta(seconds=seconds)
    raw = message(consent(user, moment, (service,)), message_id, **attributes)
    return TimestampedValue(consent_event(raw), at(moment))


def batch_pipeline() -> beam.Pipeline:
    return test_pipeline.TestPipeline(runner="BundleBasedDirectRunner")


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    return test_pipeline.TestPipeline(options=options, blocking=True)


def steps_inside(pipeline: beam.Pipeline, composite: str) -> set[str]:
    """The full labels of the steps directly inside the composite labelled `composite`."""
    transforms = pipeline.to_runner_api().components.transforms
    (outer,) = [t for t in transforms.values() if t.unique_name == composite]
    return {transforms[step].unique_name for step in outer.subtransforms}


# --- ParseAndValidate -----------------------------------------------------------------------

VALID_CONSENT = message(consent(), "consent-ok", ack_id="ack-1")
VALID_TELEMETRY = message(telemetry_body(when=EVENT_TIME), "telemetry-ok", schema="telemetry.v1")
INVALID_JSON = message(b'{"user": ', "invalid-json")
MISSING_DOMAIN = message(
    {k: v for k, v in consent().items() if k != "domain"}, "missing-domain", ack_id="ack-2"
)
UNKNOWN_SCHEMA = message(consent(), "unknown-schema", schema="orders.v9")
MIXED = [VALID_CONSENT, VALID_TELEMETRY, INVALID_JSON, MISSING_DOMAIN, UNKNOWN_SCHEMA]


def test_parse_sends_valid_consent_and_telemetry_to_valid_under_their_row_keys() -> None:
    with batch_pipeline() as p:
        parsed = p | beam.Create(MIXED) | ParseAndValidate(ParseRules())
        keys = parsed.valid | beam.Map(lambda valid: valid.event.row_key())
        assert_that(keys, equal_to([f"{SHOP}#{USER_A}", f"sensor-1#{EVENT_MS}"]))


def test_parse_sends_each_bad_message_to_invalid_with_its_kind_stage_and_schema() -> None:
    with batch_pipeline() as p:
        parsed = p | beam.Create(MIXED) | ParseAndValidate(ParseRules())
        reasons = parsed.invalid | beam.Map(
            lambda dead: (dead.raw.message_id, dead.kind, dead.stage, dead.schema)
        )
        assert_that(
            reasons,
            equal_to(
                [
                    ("invalid-json", "invalid_json", "parse", "consent.v1"),  # the default schema
                    ("missing-domain", "missing_field", "parse", "consent.v1"),
                    ("unknown-schema", "unknown_schema", "parse", ""),  # no schema it knows
                ]
            ),
        )


def test_parse_passes_the_raw_message_on_unchanged_to_either_output() -> None:
    with batch_pipeline() as p:
        parsed = p | beam.Create(MIXED) | ParseAndValidate(ParseRules())
        valid_raw = parsed.valid | "ValidRaw" >> beam.Map(lambda valid: valid.raw)
        invalid_raw = parsed.invalid | "InvalidRaw" >> beam.Map(lambda dead: dead.raw)
        # Data, attributes, id, publish time and ack id: the ack id is what acknowledges it.
        assert_that(valid_raw, equal_to([VALID_CONSENT, VALID_TELEMETRY]), label="valid")
        assert_that(
            invalid_raw, equal_to([INVALID_JSON, MISSING_DOMAIN, UNKNOWN_SCHEMA]), label="invalid"
        )


# --- AssignEventTime ------------------------------------------------------------------------

CONSENT_EVENT = consent_event(VALID_CONSENT)  # at SECOND + 789.123 ms
TELEMETRY_EVENT = telemetry_event(  # at SECOND + 5.999 ms
    message(telemetry_body(when=SECOND + timedelta(microseconds=5_999)), "telemetry-ok")
)


def test_assign_event_time_stamps_each_event_at_its_event_time_truncated_to_the_ms() -> None:
    with batch_pipeline() as p:
        stamped = p | beam.Create([CONSENT_EVENT, TELEMETRY_EVENT]) | AssignEventTime()
        stamps = stamped | beam.Map(
            lambda event, ts=beam.DoFn.TimestampParam: (event.raw.message_id, ts.micros)
        )
        assert_that(
            stamps,
            equal_to([("consent-ok", EVENT_MS * 1000), ("telemetry-ok", (SECOND_MS + 5) * 1000)]),
        )


def test_assign_event_time_leaves_events_unchanged_in_the_global_window() -> None:
    with batch_pipeline() as p:
        stamped = p | beam.Create([CONSENT_EVENT, TELEMETRY_EVENT]) | AssignEventTime()
        windows = stamped | beam.Map(
            lambda event, w=beam.DoFn.WindowParam: (event.raw.message_id, w)
        )
        assert_that(stamped, equal_to([CONSENT_EVENT, TELEMETRY_EVENT]), label="events")
        assert_that(
            windows,
            equal_to([("consent-ok", GlobalWindow()), ("telemetry-ok", GlobalWindow())]),
            label="windows",
        )


# --- DeadLetters ----------------------------------------------------------------------------

PARSE_LETTERS = [
    DeadLetter(message(b"", "p-1"), ErrorKind.EMPTY_PAYLOAD, "empty", Stage.PARSE),
    DeadLetter(message(b"{", "p-2"), ErrorKind.INVALID_JSON, "bad", Stage.PARSE, "consent.v1"),
]
WRITE_LETTERS = [
    DeadLetter(message(b"{}", "w-1"), ErrorKind.WRITE_REJECTED, "refused", Stage.WRITE),
]


def tag_letters() -> beam.PTransform:
    """A dead-letter 'publish' that stores nothing and shows what it was given."""
    return beam.Map(lambda dead: (dead.kind, dead.raw.message_id))


def letter_branches(p: beam.Pipeline) -> dict[str, beam.PCollection]:
    return {
        "parse": p | "ParseLetters" >> beam.Create(PARSE_LETTERS),
        "write": p | "WriteLetters" >> beam.Create(WRITE_LETTERS),
    }


def test_dead_letters_publishes_each_branch_separately_and_loses_nothing() -> None:
    with batch_pipeline() as p:
        stored = letter_branches(p) | "DeadLetter" >> DeadLetters(tag_letters)
        assert set(stored) == {"parse", "write"}
        assert_that(
            stored["parse"],
            equal_to([("empty_payload", "p-1"), ("invalid_json", "p-2")]),
            label="parse",
        )
        assert_that(stored["write"], equal_to([("write_rejected", "w-1")]), label="write")


def test_dead_letters_names_each_publish_step_after_its_branch() -> None:
    p = batch_pipeline()
    _ = letter_branches(p) | "DeadLetter" >> DeadLetters(tag_letters)
    # Stable per-branch labels (Dataflow --update), and no Flatten between the branches.
    assert steps_inside(p, "DeadLetter") == {"DeadLetter/parse", "DeadLetter/write"}


# --- Acknowledge ----------------------------------------------------------------------------


def written(row_key: str, ack_id: str | None) -> Written:
    return Written("consent", row_key, 0, message(b"{}", row_key, ack_id=ack_id))


def refused(message_id: str, ack_id: str | None) -> DeadLetter:
    return DeadLetter(
        message(b"{", message_id, ack_id=ack_id), ErrorKind.INVALID_JSON, "", Stage.PARSE
    )


def tag_acks() -> beam.PTransform:
    """An 'acknowledge' that calls nobody and shows which ack ids it was given."""
    return beam.Map(lambda ack_id: ("acked", ack_id))


def stored_branches(p: beam.Pipeline) -> dict[str, beam.PCollection]:
    rows = [written("r-1", "ack-r1"), written("r-2", None), written("r-3", "ack-r3")]
    letters = [refused("p-1", "ack-p1"), refused("p-2", None)]  # None: acked on read
    return {
        "rows": p | "Rows" >> beam.Create(rows),
        "parse": p | "ParseLetters" >> beam.Create(letters),
    }


def test_acknowledge_acks_exactly_each_branchs_ack_ids_and_skips_missing_ones() -> None:
    with batch_pipeline() as p:
        acked = stored_branches(p) | "Acknowledge" >> Acknowledge(tag_acks)
        assert set(acked) == {"rows", "parse"}
        assert_that(
            acked["rows"], equal_to([("acked", "ack-r1"), ("acked", "ack-r3")]), label="rows"
        )
        assert_that(acked["parse"], equal_to([("acked", "ack-p1")]), label="parse")


def test_acknowledge_names_its_steps_after_each_branch() -> None:
    p = batch_pipeline()
    _ = stored_branches(p) | "Acknowledge" >> Acknowledge(tag_acks)
    # Stable per-branch labels (Dataflow --update), and no Flatten between the branches.
    assert steps_inside(p, "Acknowledge") == {
        "Acknowledge/rows/AckIds",
        "Acknowledge/rows/Ack",
        "Acknowledge/parse/AckIds",
        "Acknowledge/parse/Ack",
    }


def test_no_acknowledgement_passes_the_ack_ids_through() -> None:
    with batch_pipeline() as p:
        acked = stored_branches(p) | "Acknowledge" >> Acknowledge(no_acknowledgement)
        assert_that(acked["rows"], equal_to(["ack-r1", "ack-r3"]), label="rows")
        assert_that(acked["parse"], equal_to(["ack-p1"]), label="parse")


# --- PreAggregate ---------------------------------------------------------------------------


def triples(element: Any) -> list[tuple[str, str, int, str]]:
    """(kind, key, window start micros, message id) of every member of a grouped element."""
    (kind, key), windows = element
    return [(kind, key, start, m.message_id) for start, ms in windows.items() for m in ms]


def test_preaggregate_groups_a_bundle_by_key_and_window_with_each_message() -> None:
    events = [
        consent_at(USER_A, 5, "a-5", "essential-1"),
        consent_at(USER_B, 65, "b-65", "essential-1"),  # the next window of the same key
        consent_at(USER_A, 5, "a-5-again", "essential-1"),  # a duplicate still travels
        TimestampedValue(telemetry_event(message(telemetry_body(when=T0), "t-0")), at(T0)),
    ]
    with batch_pipeline() as p:
        grouped = (
            p | beam.Create([e.value for e in events]) | beam.ParDo(PreAggregate(WINDOW, LATENESS))
        )
        keys = grouped | "Keys" >> beam.Map(lambda element: len({k for k, *_ in triples(element)}))
        assert_that(
            grouped | beam.FlatMap(triples),
            equal_to(
                [
                    ("consent", SHOP, T0_US, "a-5"),
                    ("consent", SHOP, T0_US, "a-5-again"),
                    ("consent", SHOP, T0_US + 60_000_000, "b-65"),
                    ("telemetry", "sensor-1", T0_US, "t-0"),
                ]
            ),
        )
        assert_that(keys, equal_to([1] * 2), label="one key per element, one element per key")


# --- Gate and Accumulate -------------------------------------------------------------------


def members_of(*members: tuple[str, float, str, str]) -> dict[int, list[Member]]:
    """{window start: members} for SHOP; each member as (user, event second, id, service)."""
    windows: dict[int, list[Member]] = {}
    for user, second, message_id, service in members:
        item = member(consent_at(user, second, message_id, service).value)
        assert item is not None
        start = T0_US + int(second // 60) * 60_000_000
        windows.setdefault(start, []).append(item[2])
    return windows


def grouped(seconds: float, *members: tuple[str, float, str, str]) -> TimestampedValue:
    """What the gate receives for SHOP: ((kind, key), {window start: members})."""
    return TimestampedValue((("consent", SHOP), members_of(*members)), t0_plus(seconds))


def one_window(seconds: float, *members: tuple[str, float, str, str]) -> TimestampedValue:
    """What a window's accumulation receives: ((kind, key, start), members)."""
    ((start, items),) = members_of(*members).items()
    return TimestampedValue((("consent", SHOP, start), items), t0_plus(seconds))


def shop_row(start: datetime, update: int, values: dict[str, str]) -> RollupRow:
    return RollupRow("consent", SHOP, start, start + WINDOW, values, update)


def consent_values(requests: int, users: int, **services: int) -> dict[str, str]:
    """The rollup's values; `essential_1=2` is the qualifier `service:essential-1`."""
    values = {"requests": str(requests), "distinct_users": str(users)}
    values.update({f"service:{name.replace('_', '-')}": str(n) for name, n in services.items()})
    return values


def gate(p: beam.Pipeline, stream: test_stream.TestStream) -> Any:
    return (
        p
        | stream
        | "Gate"
        >> beam.ParDo(Gate(WINDOW, LATENESS))
        .with_input_types(tuple[tuple[str, str], Any])  # state keys must encode deterministically
        .with_outputs(TOO_LATE, main="open")
    )


def accumulate(p: beam.Pipeline, stream: test_stream.TestStream) -> Any:
    return (
        p
        | stream
        | "Accumulate"
        >> beam.ParDo(Accumulate(WINDOW, LATENESS)).with_input_types(
            tuple[tuple[str, str, int], Any]
        )
    )


def opened(element: Any) -> tuple[int, list[str]]:
    (_kind, _key, start), members = element
    return start, sorted(m.message_id for m in members)


def late_ids(element: Any) -> str:
    return str(element[3].message_id)


def test_gate_splits_a_key_by_window_and_refuses_the_windows_it_closed() -> None:
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([grouped(5, (USER_A, 5, "a", "essential-1"), (USER_B, 70, "b", "ads-2"))])
        .advance_watermark_to(t0_plus(200))  # [0, 60) closed at 179.999 s, [60, 120) open
        .add_elements([grouped(200, (USER_C, 30, "c", "essential-1"), (USER_C, 90, "d", "x-1"))])
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outputs = gate(p, stream)
        assert_that(
            outputs.open | beam.Map(opened),
            equal_to([(T0_US, ["a"]), (T0_US + 60_000_000, ["b"]), (T0_US + 60_000_000, ["d"])]),
            label="open",
        )
        assert_that(outputs[TOO_LATE] | beam.Map(late_ids), equal_to(["c"]), label="too_late")


def test_gate_passes_a_window_the_key_never_held_even_past_its_close() -> None:
    # A DoFn cannot see the watermark: an event for a window this key never held is passed,
    # its accumulation opens and closes at once (below). Nothing is dropped silently.
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(t0_plus(500))
        .add_elements([grouped(500, (USER_A, 10, "first", "essential-1"))])
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outputs = gate(p, stream)
        assert_that(outputs.open | beam.Map(opened), equal_to([(T0_US, ["first"])]), label="open")
        assert_that(outputs[TOO_LATE], equal_to([]), label="too_late")


def test_accumulate_emits_when_due_then_one_update_per_change() -> None:
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([one_window(5, (USER_A, 5, "a", "essential-1"), (USER_B, 20, "b", "ads-2"))])
        .advance_watermark_to(t0_plus(61))  # [0, 60) is due at 59.999 s: update 0
        .add_elements([one_window(61, (USER_A, 30, "c", "essential-1"))])  # late: update 1
        .add_elements([one_window(62, (USER_A, 30, "c", "essential-1"))])  # nothing new: no row
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        assert_that(
            accumulate(p, stream),
            equal_to(
                [
                    shop_row(T0, 0, consent_values(2, 2, essential_1=1, ads_2=1)),
                    shop_row(T0, 1, consent_values(3, 2, essential_1=2, ads_2=1)),
                ]
            ),
        )


def test_accumulate_opened_after_its_close_emits_its_events_once() -> None:
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(t0_plus(500))  # both the due time and the close have passed
        .add_elements([one_window(500, (USER_A, 10, "first", "essential-1"))])
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        only = shop_row(T0, 0, consent_values(1, 1, essential_1=1))
        assert_that(accumulate(p, stream), equal_to([only]))


def test_accumulate_forgets_a_window_once_it_closed() -> None:
    # Behind the gate nothing comes for a closed window; if it did, it would start afresh.
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([one_window(5, (USER_A, 5, "a", "essential-1"))])
        .advance_watermark_to(t0_plus(300))  # due at 59.999 s, closed at 179.999 s
        .add_elements([one_window(300, (USER_B, 6, "b", "ads-2"))])
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        assert_that(
            accumulate(p, stream),
            equal_to(
                [
                    shop_row(T0, 0, consent_values(1, 1, essential_1=1)),
                    shop_row(T0, 0, consent_values(1, 1, ads_2=1)),
                ]
            ),
        )


# --- accumulators ---------------------------------------------------------------------------


def test_a_consent_window_counts_a_duplicate_request_once() -> None:
    acc = ConsentAccumulator()
    user_a, user_b = digest(USER_A), digest(USER_B)
    assert acc.add(ConsentFact(digest(USER_A, 5000), user_a, ("essential-1", "ads-2")))
    assert acc.add(ConsentFact(digest(USER_B, 5000), user_b, ("essential-1",)))
    assert not acc.add(ConsentFact(digest(USER_A, 5000), user_a, ("essential-1", "ads-2")))
    assert acc.add(ConsentFact(digest(USER_A, 6000), user_a, ()))
    assert acc.values() == {
        "requests": "3",
        "distinct_users": "2",
        "service:essential-1": "2",
        "service:ads-2": "1",
    }


def test_a_telemetry_window_counts_a_repeated_reading_once_with_an_exact_mean() -> None:
    acc = TelemetryAccumulator()
    assert acc.add(TelemetryFact(1000, (("temp_c", 0.1),)))
    assert acc.add(TelemetryFact(2000, (("temp_c", 0.2), ("rh", 50.0))))
    assert not acc.add(TelemetryFact(2000, (("temp_c", 0.2), ("rh", 50.0))))
    assert acc.add(TelemetryFact(3000, (("temp_c", 0.3),)))
    assert acc.values() == {
        "readings": "3",
        "temp_c:count": "3",
        "temp_c:min": "0.1",
        "temp_c:max": "0.3",
        "temp_c:mean": "0.2",  # (0.1 + 0.2 + 0.3) / 3 in floats is 0.20000000000000004
        "rh:count": "1",
        "rh:min": "50.0",
        "rh:max": "50.0",
        "rh:mean": "50.0",
    }


# --- Rollups --------------------------------------------------------------------------------


def rollups(p: beam.Pipeline, stream: test_stream.TestStream) -> Any:
    return p | stream | "Rollups" >> Rollups(WINDOW, LATENESS)


def test_rollups_emit_a_window_its_late_update_and_a_too_late_dead_letter() -> None:
    too_late_event = consent_at(USER_A, 10, "m-d", "ads-1", schema="consent.v1", origin="eu")
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(at(T0))
        .add_elements(
            [
                consent_at(USER_A, 5, "m-a", "essential-1"),
                consent_at(USER_B, 20, "m-b", "analytics-2"),
            ]
        )
        .advance_watermark_to(t0_plus(61))  # [0, 60) fires
        .add_elements([consent_at(USER_C, 30, "m-c", "essential-1")])  # late, within lateness
        .advance_watermark_to(t0_plus(200))  # [0, 60) expired at 180
        .add_elements([too_late_event])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outputs = rollups(p, stream)
        letters = outputs.too_late | beam.Map(
            lambda dead: (dead.kind, dead.stage, dead.schema, dead.raw, dead.error)
        )
        assert_that(
            outputs.rows,
            equal_to(
                [
                    shop_row(T0, 0, consent_values(2, 2, essential_1=1, analytics_2=1)),
                    shop_row(T0, 1, consent_values(3, 3, essential_1=2, analytics_2=1)),
                ]
            ),
            label="rows",
        )
        # The letter's message is rebuilt from what crossed the shuffle: bytes, attributes and
        # id, but no publish time (so no deadletter_publish_time) and no ack id (its row was
        # written and acknowledged already).
        letter_raw = RawMessage(
            data=too_late_event.value.raw.data,
            attributes={"schema": "consent.v1", "origin": "eu"},
            message_id="m-d",
        )
        assert_that(
            letters,
            equal_to(
                [
                    (
                        "too_late",
                        "rollup",
                        "consent.v1",
                        letter_raw,
                        "event time 2025-03-01T12:00:10.000Z of consent 'shop.example.com' "
                        "arrived after its 60s window closed (allowed lateness 120s): the "
                        "rollup excludes it; its row was written",
                    )
                ]
            ),
            label="too_late",
        )


def test_rollups_never_drop_an_expired_event_silently() -> None:
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(t0_plus(200))  # [0, 60) expired at 180
        .add_elements([consent_at(USER_A, 10, "m-quiet", "essential-1")])  # a key never seen
        .advance_watermark_to(t0_plus(1000))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outputs = rollups(p, stream)
        ids = outputs.too_late | beam.Map(lambda dead: dead.raw.message_id)
        # Either the rollup counts it or a too_late letter says it does not: here the window,
        # never held by its key, opens with it (see the Accumulate tests).
        assert_that(
            outputs.rows,
            equal_to([shop_row(T0, 0, consent_values(1, 1, essential_1=1))]),
            label="rows",
        )
        assert_that(ids, equal_to([]), label="too_late")
