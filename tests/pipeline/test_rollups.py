"""Rollups with TestStream: on-time panes, late updates, too-late dead letters, exact values.

Windows are 60 s with 120 s allowed lateness. The stored aggregate is the newest update of
a (key, window): each update is written at the window's end + its number in milliseconds.
Every test runs on the DirectRunner and on Prism (its late panes once went missing).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stream.launch.runners import find_prism
from stream.pipeline.build import build_pipeline
from stream.pipeline.config import BigtableTarget, IngestConfig, PubSubEndpoints
from tests.helpers.builders import consent_body, raw, telemetry_body
from tests.helpers.fakes import CollectingSink, TestStreamSource

# A window-aligned start, a few minutes back so nothing is in the future.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
CONFIG = IngestConfig(
    pubsub=PubSubEndpoints("projects/p-test/subscriptions/s", "projects/p-test/topics/d"),
    bigtable=BigtableTarget("p-test", "instance", {"consent": "c", "telemetry": "t"}),
    window=timedelta(seconds=60),
    allowed_lateness=timedelta(seconds=120),
)
USERS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(6)]


def at(moment: datetime) -> Timestamp:
    return Timestamp.from_utc_datetime(moment)


def consent(
    user: int, seconds: float, services: list[str], domain: str = "shop.example.com"
) -> TimestampedValue:
    when = T0 + timedelta(seconds=seconds)
    message = raw(
        consent_body(USERS[user], domain, services, when), message_id=f"m-{user}-{seconds}"
    )
    return TimestampedValue(message, at(when))


def reading(seconds: float, temp: float) -> TimestampedValue:
    when = T0 + timedelta(seconds=seconds)
    body = telemetry_body(when=when, readings={"temp_c": temp})
    return TimestampedValue(raw(body, attributes={"schema": "telemetry.v1"}), at(when))


PRISM = find_prism()


@pytest.fixture(
    params=[
        "BundleBasedDirectRunner",
        pytest.param(
            "PrismRunner",
            marks=pytest.mark.skipif(PRISM is None, reason="no Prism binary: run `make prism`"),
        ),
    ]
)
def runner(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "PrismRunner":
        return ["--runner=PrismRunner", f"--prism_location={PRISM}"]
    return [f"--runner={request.param}"]


def run(
    runner: list[str], stream: TestStream, expected_panes: list[Any], expected_dead: list[str]
) -> None:
    options = PipelineOptions(runner)
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options, blocking=True) as p:
        outputs = build_pipeline(p, TestStreamSource(stream), CollectingSink(), CONFIG)
        assert outputs.rollups is not None
        panes = outputs.rollups | "Panes" >> beam.Map(
            lambda row: (row.row_key(), row.timestamp_micros(), tuple(sorted(row.values.items())))
        )
        dead = (
            outputs.dead_letters
            | "AllDead" >> beam.Flatten()
            | "Kinds" >> beam.Map(lambda d: f"{d.kind}:{d.stage}:{d.raw.message_id}")
        )
        assert_that(panes, equal_to(expected_panes), label="panes")
        assert_that(dead, equal_to(expected_dead), label="dead")


def window_key(key: str, start_seconds: int) -> str:
    start = T0 + timedelta(seconds=start_seconds)
    return f"{key}#{start.strftime('%Y-%m-%dT%H:%M:%S')}.000Z"


def end_micros(start_seconds: int) -> int:
    end = T0 + timedelta(seconds=start_seconds + 60)
    return int((end - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000


def consent_values(requests: int, users: int, **services: int) -> tuple[tuple[str, str], ...]:
    values = {"requests": str(requests), "distinct_users": str(users)}
    values.update({f"service:{name.replace('_', '-')}": str(n) for name, n in services.items()})
    return tuple(sorted(values.items()))


# The watermark passes the windows before it jumps to infinity, as in a running pipeline. A
# window's value is emitted by an event-time timer; on the BundleBasedDirectRunner, what a
# timer emits when the watermark jumps straight to infinity arrives behind assert_that's own
# GroupByKey, which drops it as late (the pipeline's writer is a ParDo and drops nothing).


def test_on_time_late_and_too_late(runner: list[str]) -> None:
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements(
            [
                consent(0, 5, ["essential-1", "analytics-2"]),
                consent(1, 20, ["essential-1"]),
                consent(0, 40, ["essential-1"]),  # same user again: 2 users, 3 requests
                consent(0, 40, ["essential-1"]),  # the same event delivered twice: once
            ]
        )
        .advance_watermark_to(at(T0 + timedelta(seconds=61)))  # window [0, 60) fires
        .add_elements([consent(2, 30, ["analytics-2"])])  # late, within the lateness
        .advance_watermark_to(at(T0 + timedelta(seconds=90)))
        .add_elements([consent(4, 10, ["marketing-1"])])  # a second late update
        .advance_watermark_to(at(T0 + timedelta(seconds=200)))  # [0, 60) expires at 180
        .add_elements([consent(3, 50, ["essential-1"])])  # too late for the rollup
        .advance_watermark_to_infinity()
    )
    key = window_key("shop.example.com", 0)
    run(
        runner,
        stream,
        expected_panes=[
            (key, end_micros(0), consent_values(3, 2, essential_1=3, analytics_2=1)),
            # each late update holds the full window's value, one millisecond later, so it
            # is the newest version whatever order the updates are written in
            (key, end_micros(0) + 1000, consent_values(4, 3, essential_1=3, analytics_2=2)),
            (
                key,
                end_micros(0) + 2000,
                consent_values(5, 4, essential_1=3, analytics_2=2, marketing_1=1),
            ),
        ],
        expected_dead=["too_late:rollup:m-3-50"],
    )


def test_windows_and_domains_are_separate_rows(runner: list[str]) -> None:
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements(
            [
                consent(0, 10, ["essential-1"]),
                consent(1, 70, ["essential-1"]),  # next window
                consent(2, 10, ["ads-1"], domain="news.example.org"),
            ]
        )
        .advance_watermark_to(at(T0 + timedelta(seconds=400)))  # past every window: see below
        .advance_watermark_to_infinity()
    )
    run(
        runner,
        stream,
        expected_panes=[
            (window_key("shop.example.com", 0), end_micros(0), consent_values(1, 1, essential_1=1)),
            (
                window_key("shop.example.com", 60),
                end_micros(60),
                consent_values(1, 1, essential_1=1),
            ),
            (window_key("news.example.org", 0), end_micros(0), consent_values(1, 1, ads_1=1)),
        ],
        expected_dead=[],
    )


def test_telemetry_count_min_max_mean(runner: list[str]) -> None:
    stream = (
        TestStream()
        .advance_watermark_to(at(T0))
        .add_elements([reading(1, 20.0), reading(2, 22.0), reading(3, 27.5), reading(3, 27.5)])
        .advance_watermark_to(at(T0 + timedelta(seconds=400)))  # past the window: see below
        .advance_watermark_to_infinity()
    )
    values = {
        "readings": "3",  # the repeated reading (same device and millisecond) counts once
        "temp_c:count": "3",
        "temp_c:min": "20.0",
        "temp_c:max": "27.5",
        "temp_c:mean": repr((20.0 + 22.0 + 27.5) / 3),
    }
    run(
        runner,
        stream,
        expected_panes=[(window_key("sensor-1", 0), end_micros(0), tuple(sorted(values.items())))],
        expected_dead=[],
    )
