"""The whole pipeline with TestStream in and a collecting sink out (BundleBasedDirectRunner).

Raw rows must never be dropped for lateness: on-time, late (behind the watermark) and
very late (behind by more than any window + allowed lateness) events are all written; only
events outside the configured event-age limit are dead-lettered, with a reason.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.build import build_pipeline
from stream.pipeline.config import BigtableTarget, IngestConfig, PubSubEndpoints
from stream.pipeline.messages import RawMessage
from stream.pipeline.validate import ParseRules
from tests.helpers.builders import consent_body, raw
from tests.helpers.fakes import CollectingSink, TestStreamSource

NOW = datetime.now(UTC).replace(microsecond=0)
CONFIG = IngestConfig(
    pubsub=PubSubEndpoints("projects/p-test/subscriptions/s", "projects/p-test/topics/d"),
    bigtable=BigtableTarget("p-test", "instance", {"consent": "c", "telemetry": "t"}),
    rules=ParseRules(max_event_age=timedelta(days=1)),
    window=timedelta(minutes=1),
    allowed_lateness=timedelta(minutes=5),
)


def consent(event_time: datetime) -> tuple[RawMessage, str]:
    user = str(uuid.uuid4())
    message = raw(consent_body(user, when=event_time), message_id=user, publish_time=NOW)
    return message, f"example.com#{user}"


def at(moment: datetime) -> Timestamp:
    return Timestamp.from_utc_datetime(moment)


def streaming_pipeline() -> TestPipeline:
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options, blocking=True)


def test_on_time_late_and_very_late_events_are_all_written() -> None:
    on_time, on_time_key = consent(NOW)
    late, late_key = consent(NOW - timedelta(minutes=3))  # behind the watermark, in lateness
    very_late, very_late_key = consent(NOW - timedelta(hours=2))  # far beyond any lateness
    too_old, _ = consent(NOW - timedelta(days=2))  # beyond --max_event_age: dead letter
    stream = (
        TestStream()
        .advance_watermark_to(at(NOW))
        .add_elements([TimestampedValue(on_time, at(NOW))])
        .advance_watermark_to(at(NOW + timedelta(minutes=10)))
        .add_elements([TimestampedValue(late, at(NOW))])
        .add_elements([TimestampedValue(very_late, at(NOW))])
        .add_elements([TimestampedValue(too_old, at(NOW))])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outputs = build_pipeline(p, TestStreamSource(stream), CollectingSink(), CONFIG)
        keys = outputs.written | "Keys" >> beam.Map(lambda w: w.row_key)
        kinds = (
            outputs.dead_letters
            | "AllDead" >> beam.Flatten()
            | "Kinds" >> beam.Map(lambda d: (str(d.kind), d.raw.data))
        )
        assert_that(keys, equal_to([on_time_key, late_key, very_late_key]), label="rows")
        # Raw rows are never late. For the rollups (1 min windows, 5 min allowed lateness,
        # watermark 10 min ahead) the late and very late events are too late: their rows
        # are written and a too_late notice says the aggregate excludes them.
        assert_that(
            kinds,
            equal_to(
                [
                    ("event_time_out_of_range", too_old.data),
                    ("too_late", late.data),
                    ("too_late", very_late.data),
                ]
            ),
            label="dead",
        )


def test_rows_carry_event_time_not_arrival_time() -> None:
    event_time = NOW - timedelta(minutes=30, milliseconds=1, microseconds=999)
    raw, key = consent(event_time)
    stream = TestStream().add_elements([TimestampedValue(raw, at(NOW))])
    stream = stream.advance_watermark_to_infinity()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected_micros = (event_time - epoch) // timedelta(milliseconds=1) * 1000
    with streaming_pipeline() as p:
        outputs = build_pipeline(p, TestStreamSource(stream), CollectingSink(), CONFIG)
        stamps = outputs.written | beam.Map(lambda w: (w.row_key, w.timestamp_micros))
        assert_that(stamps, equal_to([(key, expected_micros)]))


def test_write_rejections_become_dead_letters_and_counters_add_up() -> None:
    good, good_key = consent(NOW)
    refused, refused_key = consent(NOW)
    garbage = RawMessage(data=b"not json", message_id="g")
    stream = TestStream().add_elements(
        [TimestampedValue(m, at(NOW)) for m in (good, refused, garbage)]
    )
    stream = stream.advance_watermark_to_infinity()
    p = streaming_pipeline()
    outputs = build_pipeline(
        p, TestStreamSource(stream), CollectingSink(reject=frozenset({refused_key})), CONFIG
    )
    keys = outputs.written | "Keys" >> beam.Map(lambda w: w.row_key)
    kinds = (
        outputs.dead_letters
        | "AllDead" >> beam.Flatten()
        | "Kinds" >> beam.Map(lambda d: (str(d.kind), str(d.stage)))
    )
    assert_that(keys, equal_to([good_key]), label="rows")
    assert_that(
        kinds,
        equal_to([("write_rejected", "write"), ("invalid_json", "parse")]),
        label="dead",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))[
            "counters"
        ]
    }
    assert counters[metrics.READ] == 3
    assert counters[metrics.VALID] == 2
    assert counters[metrics.INVALID] == 1
    assert counters["invalid_invalid_json"] == 1


@pytest.mark.parametrize("schema", ["consent.v1", "telemetry.v1"])
def test_default_schema_applies_without_attribute(schema: str) -> None:
    body = {
        "device_id": "dev-7",
        "recorded_at": NOW.isoformat(),
        "readings": {"temp_c": 1.5},
        "firmware": "1.0.0",
    }
    raw = RawMessage(data=json.dumps(body).encode(), message_id="m1")
    config = IngestConfig(
        pubsub=CONFIG.pubsub, bigtable=CONFIG.bigtable, rules=ParseRules(default_schema=schema)
    )
    stream = TestStream().add_elements([TimestampedValue(raw, at(NOW))])
    stream = stream.advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        outputs = build_pipeline(p, TestStreamSource(stream), CollectingSink(), config)
        written = outputs.written | "N" >> beam.Map(lambda w: w.table_id)
        dead = (
            outputs.dead_letters
            | "AllDead" >> beam.Flatten()
            | "D" >> beam.Map(lambda d: str(d.kind))
        )
        if schema == "telemetry.v1":
            assert_that(written, equal_to(["telemetry"]), label="rows")
            assert_that(dead, equal_to([]), label="dead")
        else:
            assert_that(written, equal_to([]), label="rows")
            assert_that(dead, equal_to(["missing_field"]), label="dead")
