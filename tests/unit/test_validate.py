"""validate(raw, rules, now): every parse-stage ErrorKind with its exact reason text."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.consent import ConsentV1, ConsentV2
from schemas.telemetry import TelemetryV1
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage, ValidEvent
from stream.pipeline.validate import ParseRules, validate

NOW = datetime(2026, 11, 24, 6, 40, 53, tzinfo=UTC)
RULES = ParseRules()
USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"


def consent(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": USER,
        "domain": "example.com",
        "services": ["essential-1"],
        "message_timestamp": "2026-11-24T06:40:00.250Z",
    }
    body.update(overrides)
    return body


def telemetry(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": "sensor-1",
        "recorded_at": "2026-11-24T06:40:00.250Z",
        "readings": {"temp_c": 21.5},
        "firmware": "1.0.0",
    }
    body.update(overrides)
    return body


def message(body: dict[str, Any] | bytes, **attributes: str) -> RawMessage:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawMessage(
        data=data,
        attributes=attributes,
        message_id="msg-1",
        publish_time=datetime(2026, 11, 24, 6, 40, 1, tzinfo=UTC),
    )


def rejected(raw: RawMessage, rules: ParseRules = RULES) -> DeadLetter:
    result = validate(raw, rules, NOW)
    assert isinstance(result, DeadLetter), result
    return result


def accepted(raw: RawMessage, rules: ParseRules = RULES) -> ValidEvent:
    result = validate(raw, rules, NOW)
    assert isinstance(result, ValidEvent), result
    return result


# --- valid messages and schema selection ------------------------------------------------


def test_valid_consent_keeps_raw_message() -> None:
    raw = message(consent())
    result = accepted(raw)
    assert result.raw is raw
    assert type(result.event) is ConsentV1
    assert result.event.row_key() == "example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"


@pytest.mark.parametrize(
    ("attributes", "body", "model"),
    [
        pytest.param({}, consent(), ConsentV1, id="no-attribute-default"),
        pytest.param({"schema": ""}, consent(), ConsentV1, id="empty-attribute-default"),
        pytest.param({"schema": "consent.v1"}, consent(), ConsentV1, id="v1"),
        pytest.param(
            {"schema": "consent.v2"},
            consent(services=[{"id": "ads-2", "granted": True}], region="us"),
            ConsentV2,
            id="v2",
        ),
        pytest.param({"schema": "telemetry.v1"}, telemetry(), TelemetryV1, id="telemetry"),
    ],
)
def test_schema_attribute_selects_model(
    attributes: dict[str, str], body: dict[str, Any], model: type
) -> None:
    assert type(accepted(message(body, **attributes)).event) is model


def test_custom_schema_attribute_name() -> None:
    rules = ParseRules(schema_attribute="type")
    assert type(accepted(message(telemetry(), type="telemetry.v1"), rules).event) is TelemetryV1
    # the usual attribute is now just an attribute: the default schema (consent.v1) applies
    letter = rejected(message(telemetry(), schema="telemetry.v1"), rules)
    assert (letter.kind, letter.schema) == (ErrorKind.MISSING_FIELD, "consent.v1")


def test_custom_default_schema() -> None:
    rules = ParseRules(default_schema="telemetry.v1")
    assert type(accepted(message(telemetry()), rules).event) is TelemetryV1


def test_valid_event_time_bounds_are_inclusive() -> None:
    # exactly 7 days old and exactly 5 minutes ahead are still accepted
    accepted(message(consent(message_timestamp="2026-11-17T06:40:53Z")))
    accepted(message(consent(message_timestamp="2026-11-24T06:45:53Z")))


def test_row_key_exactly_4096_bytes_is_accepted() -> None:
    # key = device id + '#' + 13 digits = 4082 + 14
    result = accepted(message(telemetry(device_id="d" * 4082), schema="telemetry.v1"))
    assert len(result.event.row_key()) == 4096


# --- every parse-stage ErrorKind ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "schema", "error"),
    [
        pytest.param(
            message(b"", schema="consent.v1"),
            ErrorKind.EMPTY_PAYLOAD,
            "consent.v1",
            "the message body is empty",
            id="empty",
        ),
        pytest.param(
            message(b"x" * 65_537),
            ErrorKind.PAYLOAD_TOO_LARGE,
            "consent.v1",
            "the message body is 65537 bytes; the limit is 65536",
            id="too-large",
        ),
        pytest.param(
            message(b"\xff\xfe{}"),
            ErrorKind.NOT_UTF8,
            "consent.v1",
            "the message body is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
            id="not-utf8",
        ),
        pytest.param(
            message(b"[1, 2]"),
            ErrorKind.INVALID_JSON,
            "consent.v1",
            "consent.v1: the message body must be a JSON object",
            id="json-array",
        ),
        pytest.param(
            message(b"null"),
            ErrorKind.INVALID_JSON,
            "consent.v1",
            "consent.v1: the message body must be a JSON object",
            id="json-null",
        ),
        pytest.param(
            message(b'"text"', schema="telemetry.v1"),
            ErrorKind.INVALID_JSON,
            "telemetry.v1",
            "telemetry.v1: the message body must be a JSON object",
            id="json-string",
        ),
        pytest.param(
            message(b"42"),
            ErrorKind.INVALID_JSON,
            "consent.v1",
            "consent.v1: the message body must be a JSON object",
            id="json-number",
        ),
        pytest.param(
            message(b"{}", schema="consent.v9"),
            ErrorKind.UNKNOWN_SCHEMA,
            "",
            "unknown schema 'consent.v9'; known: consent.v1, consent.v2, telemetry.v1",
            id="unknown-schema",
        ),
        pytest.param(
            message({k: v for k, v in consent().items() if k != "domain"}),
            ErrorKind.MISSING_FIELD,
            "consent.v1",
            "consent.v1: domain: Field required",
            id="missing",
        ),
        pytest.param(
            message(consent(extra=1)),
            ErrorKind.UNEXPECTED_FIELD,
            "consent.v1",
            "consent.v1: extra: Extra inputs are not permitted",
            id="unexpected",
        ),
        pytest.param(
            message(consent(services=["essential-1", "essential-1"])),
            ErrorKind.INVALID_FIELD,
            "consent.v1",
            "consent.v1: services: Value error, service 'essential-1' is listed twice",
            id="invalid",
        ),
        pytest.param(
            message(consent(message_timestamp=True)),
            ErrorKind.INVALID_FIELD,
            "consent.v1",
            "consent.v1: message_timestamp: Value error, must be an RFC 3339 string or epoch "
            "milliseconds, not a boolean",
            id="invalid-timestamp-bool",
        ),
        pytest.param(
            message(consent(message_timestamp="2026-11-17T06:40:52.999Z")),
            ErrorKind.EVENT_TIME_OUT_OF_RANGE,
            "consent.v1",
            "consent.v1: <message>: event time 2026-11-17T06:40:52.999Z is older than the "
            "maximum age of 604800s",
            id="too-old",
        ),
        pytest.param(
            message(consent(message_timestamp=1_795_502_753_001)),
            ErrorKind.EVENT_TIME_OUT_OF_RANGE,
            "consent.v1",
            "consent.v1: <message>: event time 2026-11-24T06:45:53.001Z is more than 300s in "
            "the future",
            id="too-far-future",
        ),
        pytest.param(
            message(telemetry(device_id="d" * 5000), schema="telemetry.v1"),
            ErrorKind.ROW_KEY_TOO_LARGE,
            "telemetry.v1",
            "row key is 5014 bytes; Bigtable allows at most 4096",
            id="row-key-5000",
        ),
        pytest.param(
            message(telemetry(device_id="d" * 4083), schema="telemetry.v1"),
            ErrorKind.ROW_KEY_TOO_LARGE,
            "telemetry.v1",
            "row key is 4097 bytes; Bigtable allows at most 4096",
            id="row-key-4097",
        ),
    ],
)
def test_rejections(raw: RawMessage, kind: ErrorKind, schema: str, error: str) -> None:
    letter = rejected(raw)
    assert letter == DeadLetter(raw=raw, kind=kind, error=error, stage=Stage.PARSE, schema=schema)
    assert letter.raw is raw


def test_invalid_json_text_names_the_parser_problem() -> None:
    letter = rejected(message(b'{"user": '))
    assert letter.kind is ErrorKind.INVALID_JSON
    assert letter.error == (
        "consent.v1: <message>: Invalid JSON: EOF while parsing a value at line 1 column 9"
    )


def test_v2_invalid_region() -> None:
    body = consent(services=[{"id": "ads-2", "granted": True}], region="north")
    letter = rejected(message(body, schema="consent.v2"))
    assert (letter.kind, letter.schema) == (ErrorKind.INVALID_FIELD, "consent.v2")
    assert letter.error == (
        "consent.v2: region: Input should be 'eu', 'us', 'apac', 'latam' or 'mea'"
    )


def test_missing_wins_over_other_problems_and_all_are_listed() -> None:
    body = {"user": "nope", "extra": 1}
    letter = rejected(message(body))
    assert letter.kind is ErrorKind.MISSING_FIELD
    assert letter.error.startswith("consent.v1: user: Input should be a valid UUID")
    for fragment in (
        "domain: Field required",
        "services: Field required",
        "message_timestamp: Field required",
        "extra: Extra inputs are not permitted",
    ):
        assert fragment in letter.error


def test_custom_limits_come_from_rules() -> None:
    rules = ParseRules(
        max_message_bytes=10,
        max_event_age=timedelta(hours=1),
        max_future_skew=timedelta(seconds=0),
    )
    too_big = rejected(message(b"{" + b" " * 10), rules)
    assert too_big.error == "the message body is 11 bytes; the limit is 10"
    small = ParseRules(max_event_age=timedelta(hours=1), max_future_skew=timedelta(seconds=0))
    old = rejected(message(consent(message_timestamp="2026-11-24T05:40:52Z")), small)
    assert old.error.endswith(
        "event time 2026-11-24T05:40:52.000Z is older than the maximum age of 3600s"
    )
    ahead = rejected(message(consent(message_timestamp="2026-11-24T06:40:53.001Z")), small)
    assert ahead.error.endswith("event time 2026-11-24T06:40:53.001Z is more than 0s in the future")


# --- error text stays within a Pub/Sub attribute -----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(message(consent(**{"x" * 5000: 1})), id="huge-extra-field-name"),
        pytest.param(
            message(consent(services=[f"Bad-{i}" for i in range(64)])), id="64-bad-services"
        ),
        pytest.param(message(b"{}", schema="s" * 1000), id="huge-unknown-schema"),
        pytest.param(
            message(consent(**{f"extra_{i}": i for i in range(500)})), id="500-extra-fields"
        ),
    ],
)
def test_error_text_is_capped(raw: RawMessage) -> None:
    letter = rejected(raw)
    assert 0 < len(letter.error.encode()) < 1024
    assert len(letter.error) == 900  # these inputs all produce longer texts, cut at 900


def test_error_text_is_capped_in_bytes_for_multibyte_input() -> None:
    letter = rejected(message(consent(**{"\u00e9" * 2000: 1})))
    assert letter.kind is ErrorKind.UNEXPECTED_FIELD
    assert len(letter.error.encode()) < 1024


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["max", "min"]
)
def test_timestamp_overflowing_utc_is_dead_lettered(stamp: str) -> None:
    letter = rejected(message(consent(message_timestamp=stamp)))
    assert (letter.kind, letter.stage) == (ErrorKind.INVALID_FIELD, Stage.PARSE)


def test_v1_services_sent_as_v2_are_an_invalid_field() -> None:
    letter = rejected(message(consent(region="eu"), schema="consent.v2"))
    assert letter.kind is ErrorKind.INVALID_FIELD
    assert letter.error.startswith("consent.v2: services.0: ")
