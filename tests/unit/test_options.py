"""Flags -> IngestConfig: local defaults, every problem listed at once, emulator rules."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from stream.launch.options import ConfigError, to_config, uses_emulators
from stream.pipeline.validate import EventTimeFallback, MissingEventTime, ParseRules

LOCAL_SUB = "projects/local-project/subscriptions/request_buffer-sub"
PROD_SUB = "projects/prod-project/subscriptions/events-sub"
DATAFLOW = [
    "--runner=DataflowRunner",
    "--streaming",
    "--project=prod-project",
    "--region=europe-west1",
    "--temp_location=gs://b/tmp",
]


def options(*flags: str) -> PipelineOptions:
    return PipelineOptions(list(flags))


def problems(*flags: str) -> set[str]:
    """The problem lines of the ConfigError that the flags must raise."""
    with pytest.raises(ConfigError) as exc:
        to_config(options(*flags))
    header, *lines = str(exc.value).split("\n")
    assert header == "invalid configuration:"
    assert all(line.startswith("  ") for line in lines)
    return {line.strip() for line in lines}


def test_defaults_target_the_local_emulator_resources() -> None:
    config = to_config(options("--streaming"))

    assert config.pubsub.subscription == "projects/local-project/subscriptions/request_buffer-sub"
    assert (
        config.pubsub.dead_letter_topic == "projects/local-project/topics/request_buffer-deadletter"
    )
    assert config.pubsub.project == "local-project"
    assert (config.pubsub.pull_max_messages, config.pubsub.readers) == (1000, 2)
    assert (config.pubsub.id_label, config.pubsub.timestamp_attribute) == (None, None)
    assert config.bigtable.project == "local-project"
    assert config.bigtable.instance == "scale-bigtable"
    assert config.bigtable.tables == {
        "consent": "scale-traffic",
        "telemetry": "telemetry",
        "rollup": "scale-rollups",
    }
    assert config.bigtable.batch_rows == 500
    assert config.bigtable.timeout == timedelta(seconds=60)
    assert config.bigtable.retry == timedelta(minutes=15)
    assert config.pubsub.max_lease == timedelta(hours=1)
    assert config.bigtable.record_ingest_time is False
    assert config.rules == ParseRules(
        default_schema="consent.v1",
        schema_attribute="schema",
        max_message_bytes=65_536,
        max_event_age=timedelta(days=7),
        max_future_skew=timedelta(minutes=5),
    )
    assert config.window == timedelta(minutes=1)
    assert config.allowed_lateness == timedelta(hours=1)
    assert config.status_interval == timedelta(seconds=5)


def test_flags_reach_the_config() -> None:
    config = to_config(
        options(
            "--streaming",
            f"--subscription={PROD_SUB}",
            "--bigtable_instance=prod-instance",
            "--consent_table=consent_2026",
            "--telemetry_table=telemetry.v1",
            "--write_batch_rows=1000",
            "--pull_max_messages=1",
            "--schema_attribute=type",
            "--default_schema=telemetry.v1",
            "--max_future_skew_seconds=0",
            "--record_ingest_time",
            "--write_retry_seconds=120",
            "--max_lease_seconds=300",
        )
    )
    assert config.bigtable.retry == timedelta(minutes=2)
    assert config.pubsub.max_lease == timedelta(minutes=5)
    assert config.pubsub.subscription == PROD_SUB
    # the dead-letter topic and Bigtable project follow the subscription's project
    assert (
        config.pubsub.dead_letter_topic == "projects/prod-project/topics/request_buffer-deadletter"
    )
    assert config.bigtable.project == "prod-project"
    assert config.bigtable.instance == "prod-instance"
    assert config.bigtable.tables == {
        "consent": "consent_2026",
        "telemetry": "telemetry.v1",
        "rollup": "scale-rollups",
    }
    assert (config.bigtable.batch_rows, config.pubsub.pull_max_messages) == (1000, 1)
    assert config.bigtable.record_ingest_time is True
    assert config.rules.schema_attribute == "type"
    assert config.rules.default_schema == "telemetry.v1"
    assert config.rules.max_future_skew == timedelta(0)


STREAMING_REQUIRED = (
    "--streaming is required: Pub/Sub is an unbounded source "
    "(or --input <files> for a batch backfill)"
)


def test_missing_streaming_is_an_error() -> None:
    assert problems() == {STREAMING_REQUIRED}


def test_every_bad_flag_is_listed_in_one_error() -> None:
    assert problems(
        "--subscription=request_buffer-sub",
        "--bigtable_instance=Scale",
        "--pull_max_messages=0",
        "--write_batch_rows=1001",
        "--id_label=uid",
        "--consent_table=bad table",
        "--default_schema=consent.v3",
    ) == {
        STREAMING_REQUIRED,
        "--subscription=request_buffer-sub: expected projects/<p>/subscriptions/<s>",
        "--bigtable_instance=Scale: an instance id is 6-33 of [-a-z0-9]",
        "--pull_max_messages=0: must be between 1 and 1000",
        "--write_batch_rows=1001: must be between 1 and 1000",
        "--id_label is only supported on Dataflow's native Pub/Sub read",
        "--consent_table=bad table: a table id is 1-50 of [-_.a-zA-Z0-9]",
        "--default_schema=consent.v3: no installed package provides it; installed: consent.v1, "
        "consent.v2, telemetry.v1 (install the plugin that does: README, Your own message types)",
    }


@pytest.mark.parametrize(
    "subscription",
    [
        "request_buffer-sub",
        "projects/local-project/topics/request_buffer",
        "projects/Local-Project/subscriptions/request_buffer-sub",
        "projects/proj/subscriptions/request_buffer-sub",  # project id too short
        "projects/local-project/subscriptions/ab",  # subscription name too short
        "projects/local-project/subscriptions/a/b",
        "projects/local-project/subscriptions/" + "s" * 256,
    ],
)
def test_bad_subscription_path(subscription: str) -> None:
    assert problems("--streaming", f"--subscription={subscription}") == {
        f"--subscription={subscription}: expected projects/<p>/subscriptions/<s>"
    }


@pytest.mark.parametrize(
    "topic", ["request_buffer-deadletter", "projects/local-project/subscriptions/dead"]
)
def test_bad_dead_letter_topic(topic: str) -> None:
    assert problems("--streaming", f"--dead_letter_topic={topic}") == {
        f"--dead_letter_topic={topic}: expected projects/<p>/topics/<t>"
    }


@pytest.mark.parametrize(
    "instance", ["scale", "Scale-bigtable", "scale-bigtable-", "1scale-bigtable", "a" * 34]
)
def test_bad_instance_id(instance: str) -> None:
    assert problems("--streaming", f"--bigtable_instance={instance}") == {
        f"--bigtable_instance={instance}: an instance id is 6-33 of [-a-z0-9]"
    }


@pytest.mark.parametrize("instance", ["abcdef", "a" * 33, "scale-bigtable-2"])
def test_good_instance_id(instance: str) -> None:
    flags = ("--streaming", f"--bigtable_instance={instance}")
    assert to_config(options(*flags)).bigtable.instance == instance


@pytest.mark.parametrize(
    ("flag", "value", "low", "high"),
    [
        ("pull_max_messages", 0, 1, 1000),
        ("pull_max_messages", 1001, 1, 1000),
        ("write_batch_rows", 0, 1, 1000),
        ("write_batch_rows", 1001, 1, 1000),
        ("readers", 17, 1, 16),
        ("max_message_bytes", 0, 1, 10_485_760),
        ("window_seconds", 0, 1, 86_400),
        ("max_future_skew_seconds", -1, 0, 86_400),
        ("status_interval_seconds", 3601, 0, 3600),
        ("write_retry_seconds", -1, 0, 86_400),
        ("max_lease_seconds", 86_401, 0, 86_400),
    ],
)
def test_out_of_range(flag: str, value: int, low: int, high: int) -> None:
    assert problems("--streaming", f"--{flag}={value}") == {
        f"--{flag}={value}: must be between {low} and {high}"
    }


@pytest.mark.parametrize(("flag", "value"), [("pull_max_messages", 1), ("write_batch_rows", 1000)])
def test_range_bounds_are_inclusive(flag: str, value: int) -> None:
    to_config(options("--streaming", f"--{flag}={value}"))


def test_no_retry_in_place_and_no_lease_extension_are_allowed() -> None:
    config = to_config(options("--streaming", "--write_retry_seconds=0", "--max_lease_seconds=0"))
    assert (config.bigtable.retry, config.pubsub.max_lease) == (timedelta(0), timedelta(0))


def test_a_lease_shorter_than_the_write_retries_is_an_error() -> None:
    assert problems("--streaming", "--write_retry_seconds=900", "--max_lease_seconds=899") == {
        "--max_lease_seconds=899: must be at least --write_retry_seconds (900), or a message "
        "whose write is still backing off would be delivered again"
    }
    assert problems("--streaming", "--write_retry_seconds=3601") == {
        "--max_lease_seconds=3600: must be at least --write_retry_seconds (3601), or a message "
        "whose write is still backing off would be delivered again"
    }


@pytest.mark.parametrize(
    ("runner", "flag"),
    [
        ("", "--id_label=uid"),
        ("--runner=PrismRunner", "--id_label=uid"),
        ("--runner=DirectRunner", "--timestamp_attribute=ts"),
    ],
)
def test_dataflow_only_flags_on_other_runners(runner: str, flag: str) -> None:
    name = flag.split("=")[0]
    flags = [f for f in ("--streaming", runner, flag) if f]
    assert problems(*flags) == {f"{name} is only supported on Dataflow's native Pub/Sub read"}


def test_dataflow_requires_subscription() -> None:
    assert problems(*DATAFLOW) == {
        "--subscription is required on Dataflow (projects/<p>/subscriptions/<s>)"
    }


def test_dataflow_with_subscription_and_dedup_flags() -> None:
    config = to_config(
        options(
            *DATAFLOW, f"--subscription={PROD_SUB}", "--id_label=uid", "--timestamp_attribute=ts"
        )
    )
    assert config.pubsub.subscription == PROD_SUB
    assert (
        config.pubsub.dead_letter_topic == "projects/prod-project/topics/request_buffer-deadletter"
    )
    assert config.bigtable.project == "prod-project"
    assert (config.pubsub.id_label, config.pubsub.timestamp_attribute) == ("uid", "ts")


def test_explicit_bigtable_project_wins() -> None:
    config = to_config(
        options("--streaming", f"--subscription={PROD_SUB}", "--bigtable_project=other-project")
    )
    assert config.bigtable.project == "other-project"


def test_bad_bigtable_project() -> None:
    assert problems("--streaming", "--bigtable_project=Bad_Project") == {
        "--bigtable_project=Bad_Project: a project id is 6-30 of [-a-z0-9]"
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param([], True, id="nothing-given"),
        pytest.param([f"--subscription={PROD_SUB}"], False, id="subscription-given"),
        pytest.param(["--runner=DataflowRunner"], False, id="dataflow"),
        pytest.param(["--runner=PrismRunner"], True, id="prism"),
        pytest.param(["--emulators=off"], False, id="off"),
        pytest.param(["--emulators=on", f"--subscription={PROD_SUB}"], True, id="on-with-sub"),
        pytest.param(["--emulators=on", "--runner=DataflowRunner"], True, id="on-dataflow"),
        pytest.param(["--emulators=auto", f"--subscription={PROD_SUB}"], False, id="auto-sub"),
    ],
)
def test_uses_emulators(flags: list[str], expected: bool) -> None:
    assert uses_emulators(options(*flags)) is expected


@pytest.mark.parametrize("runner", ["dataflow", "dataflowrunner", "Dataflow"])
def test_dataflow_runner_alias_is_dataflow(runner: str) -> None:
    assert uses_emulators(options(f"--runner={runner}")) is False
    flags = [f"--runner={runner}", *DATAFLOW[1:]]
    assert problems(*flags) == {
        "--subscription is required on Dataflow (projects/<p>/subscriptions/<s>)"
    }


def test_backfill_is_batch_with_no_age_limit_and_no_rollups() -> None:
    config = to_config(options("--input=archive/*.jsonl"))
    assert config.input_pattern == "archive/*.jsonl"
    assert config.input_schema == "consent.v1"
    assert config.rollups is False
    assert config.rules.max_event_age >= timedelta(days=365 * 99)


def test_backfill_choices_can_be_made_explicitly() -> None:
    config = to_config(
        options(
            "--input=a.jsonl",
            "--input_schema=telemetry.v1",
            "--rollups=on",
            "--max_event_age_seconds=86400",
        )
    )
    assert (config.input_schema, config.rollups) == ("telemetry.v1", True)
    assert config.rules.max_event_age == timedelta(days=1)


def test_backfill_with_streaming_or_a_bad_schema_is_an_error() -> None:
    assert problems("--input=a.jsonl", "--streaming", "--input_schema=consent.v9") == {
        "--input is a batch backfill: drop --streaming",
        "--input_schema=consent.v9: no installed package provides it; installed: consent.v1, "
        "consent.v2, telemetry.v1 (install the plugin that does: README, Your own message types)",
    }


def test_streaming_keeps_the_seven_day_age_limit_and_rollups() -> None:
    config = to_config(options("--streaming"))
    assert config.rules.max_event_age == timedelta(days=7)
    assert config.rollups is True
    assert "--max_event_age_seconds=31622401: must be between 1 and 31622400" in problems(
        "--streaming", "--max_event_age_seconds=31622401"
    )


# --- messages without an event time, and the service catalog ----------------------------


def test_missing_event_time_defaults_to_reject() -> None:
    fallback = to_config(options("--streaming")).rules.missing_event_time
    assert fallback == EventTimeFallback(MissingEventTime.REJECT)


def test_publish_time_fallback_is_for_streaming() -> None:
    rules = to_config(options("--streaming", "--missing_event_time=publish_time")).rules
    assert rules.missing_event_time == EventTimeFallback(MissingEventTime.PUBLISH_TIME)
    assert problems("--input=a.jsonl", "--missing_event_time=publish_time") == {
        "--missing_event_time=publish_time: files have no publish time; use file_mtime or a "
        "fixed RFC 3339 instant"
    }


def test_backfill_fallbacks_are_for_files_only() -> None:
    mtime = to_config(options("--input=a.jsonl", "--missing_event_time=file_mtime")).rules
    assert mtime.missing_event_time == EventTimeFallback(MissingEventTime.FILE_MTIME)
    fixed = to_config(options("--input=a.jsonl", "--missing_event_time=2021-03-05T01:00:00+01:00"))
    assert fixed.rules.missing_event_time == EventTimeFallback(
        MissingEventTime.FIXED, datetime(2021, 3, 5, tzinfo=UTC)
    )
    assert problems("--streaming", "--missing_event_time=file_mtime") == {
        "--missing_event_time=file_mtime: only a backfill (--input) reads files; use publish_time"
    }
    assert problems("--streaming", "--missing_event_time=2021-03-05T00:00:00Z") == {
        "--missing_event_time=2021-03-05T00:00:00Z: a fixed instant is for a backfill (--input) "
        "only"
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("now", "choose reject, publish_time, file_mtime or an RFC 3339 instant"),
        ("fixed", "give the instant itself, e.g. 2021-03-05T00:00:00Z"),
        ("2999-01-01T00:00:00Z", "the instant is in the future"),
        ("2021-03-05T00:00:00", "needs an offset"),
    ],
)
def test_bad_fallbacks_say_what_to_write(value: str, problem: str) -> None:
    (line,) = problems("--input=a.jsonl", f"--missing_event_time={value}")
    assert line.startswith(f"--missing_event_time={value}: ") and problem in line


def test_service_catalog_is_read_at_start_up(tmp_path: Path) -> None:
    catalog = tmp_path / "services.txt"
    catalog.write_text("# the seed's marketing ids\nmarketing-1\n  marketing-2  # comment\n\n")
    rules = to_config(options("--streaming", f"--service_catalog={catalog}")).rules
    assert rules.service_catalog == frozenset({"marketing-1", "marketing-2"})
    as_json = tmp_path / "services.json"
    as_json.write_text('["essential-1", "web_performance_and_analytics-3"]')
    rules = to_config(options("--streaming", f"--service_catalog={as_json}")).rules
    assert rules.service_catalog == frozenset({"essential-1", "web_performance_and_analytics-3"})
    assert to_config(options("--streaming")).rules.service_catalog is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the catalog lists no service ids"),
        ("# nothing\n", "the catalog lists no service ids"),
        ("essential-1\nMarketing 2\n", "line 2: 'Marketing 2'"),
        ('["essential-1", 7]', "item 1: 7"),
        ('{"ids": []}', "not service ids (a category and a number, e.g. essential-1): line 1"),
        ("[essential-1", "not a JSON list of service ids"),
    ],
)
def test_a_bad_catalog_fails_at_start_up(tmp_path: Path, text: str, problem: str) -> None:
    catalog = tmp_path / "services.txt"
    catalog.write_text(text)
    (line,) = problems("--streaming", f"--service_catalog={catalog}")
    assert line.startswith(f"--service_catalog={catalog}: ") and problem in line


def test_a_missing_catalog_names_the_file(tmp_path: Path) -> None:
    (line,) = problems("--streaming", f"--service_catalog={tmp_path}/absent.txt")
    assert "absent.txt: cannot read the service catalog" in line
