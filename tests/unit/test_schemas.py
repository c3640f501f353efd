"""Schemas: row keys, cells and cell timestamps against the documented mapping; invalid kinds.

Expected values are written out by hand (epoch values checked with `date -u`), never
recomputed with the code under test.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.base import MappedEvent
from schemas.consent import ConsentV1, ConsentV2
from schemas.registry import BUILT_IN, BUILT_IN_TABLES, DEFAULT_SCHEMA
from schemas.telemetry import TelemetryV1
from stream.pipeline.tables import tables

USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
# 2026-11-24T06:40:53Z is 1795502453 s after the epoch.
STAMP = "2026-11-24T06:40:53.123456Z"
STAMP_MICROS = 1_795_502_453_123_000
STAMP_CELL = b"2026-11-24T06:40:53.123Z"


def v1_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": USER,
        "domain": "example.com",
        "services": ["essential-1", "marketing-5"],
        "message_timestamp": STAMP,
    }
    body.update(overrides)
    return body


def v2_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": USER,
        "domain": "example.com",
        "services": [
            {"id": "essential-1", "granted": True},
            {"id": "ads-2", "granted": False},
            {"id": "analytics-12", "granted": True},
        ],
        "region": "eu",
        "message_timestamp": STAMP,
    }
    body.update(overrides)
    return body


def telemetry_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": "sensor-0042",
        "recorded_at": STAMP,
        "readings": {"temp_c": 21.5, "humidity_pct": 40},
        "firmware": "1.4.2",
    }
    body.update(overrides)
    return body


def parse(model: type[MappedEvent], body: dict[str, Any]) -> MappedEvent:
    """Validate the JSON text the way the pipeline does (JSON mode, no time bounds)."""
    return model.model_validate_json(json.dumps(body))


def cells_of(event: MappedEvent) -> dict[tuple[str, bytes], bytes]:
    return {(cell.family, cell.qualifier): cell.value for cell in event.cells()}


def only_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, tuple[Any, ...], str]:
    errors = exc.value.errors(include_url=False)
    assert len(errors) == 1, errors
    return errors[0]["type"], tuple(errors[0]["loc"]), errors[0]["msg"]


# --- registry ----------------------------------------------------------------------------


def test_registry_maps_attribute_values_to_models() -> None:
    assert BUILT_IN == {
        "consent.v1": ConsentV1,
        "consent.v2": ConsentV2,
        "telemetry.v1": TelemetryV1,
    }
    assert BUILT_IN.get("consent.v2") is ConsentV2
    assert BUILT_IN.get("consent.v3") is None
    assert DEFAULT_SCHEMA == "consent.v1"


def test_registry_tables_and_families() -> None:
    assert {group: (spec.default_table_id, spec.families) for group, spec in tables().items()} == {
        "consent": ("scale-traffic", ("cf1",)),
        "telemetry": ("telemetry", ("r", "m")),
        "rollup": ("scale-rollups", ("consent", "telemetry")),
    }
    assert set(BUILT_IN_TABLES) == {"consent", "telemetry"}
    assert ConsentV1.table is ConsentV2.table is tables()["consent"]
    assert TelemetryV1.table is tables()["telemetry"]


# --- consent.v1 --------------------------------------------------------------------------


def test_v1_row_key_cells_and_timestamp() -> None:
    event = parse(ConsentV1, v1_body())

    assert event.row_key() == "example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
    assert [(c.family, c.qualifier, c.value) for c in event.cells()] == [
        ("cf1", b"services", b'["essential-1","marketing-5"]'),
        ("cf1", b"message_timestamp", b"2026-11-24T06:40:53.123Z"),
    ]
    assert event.timestamp_micros() == 1_795_502_453_123_000
    assert event.event_time() == datetime(2026, 11, 24, 6, 40, 53, 123456, tzinfo=UTC)
    assert event.event_time().utcoffset() == timedelta(0)


def test_v1_domain_is_lower_cased_in_key() -> None:
    event = parse(ConsentV1, v1_body(domain="Shop.EXAMPLE.Com"))
    assert event.row_key() == "shop.example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"


def test_v1_user_uuid_is_written_canonically() -> None:
    event = parse(ConsentV1, v1_body(user="0B5F8A8E-3D4C-4F4E-9A57-1C2D3E4F5A6B"))
    assert event.row_key() == "example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"


def test_v1_empty_services_list_is_stored_as_empty_json_list() -> None:
    assert cells_of(parse(ConsentV1, v1_body(services=[])))[("cf1", b"services")] == b"[]"


def test_v1_services_keep_the_producer_order() -> None:
    event = parse(ConsentV1, v1_body(services=["marketing-5", "analytics-12", "essential-1"]))
    assert cells_of(event)[("cf1", b"services")] == b'["marketing-5","analytics-12","essential-1"]'


def test_v1_accepts_exactly_64_services() -> None:
    services = [f"svc-{i}" for i in range(64)]
    event = parse(ConsentV1, v1_body(services=services))
    assert cells_of(event)[("cf1", b"services")].count(b'"svc-') == 64


@pytest.mark.parametrize(
    ("stamp", "cell", "micros"),
    [
        pytest.param(STAMP, STAMP_CELL, STAMP_MICROS, id="utc-sub-millisecond"),
        # .123999 is truncated, not rounded, to .123
        pytest.param(
            "2026-11-24T08:40:53.123999+02:00", STAMP_CELL, STAMP_MICROS, id="plus-02-offset"
        ),
        pytest.param(
            "2026-11-23T20:40:53.5-10:00",
            b"2026-11-24T06:40:53.500Z",
            1_795_502_453_500_000,
            id="minus-10-offset",
        ),
        pytest.param(
            "2026-11-24T06:40:53Z", b"2026-11-24T06:40:53.000Z", 1_795_502_453_000_000, id="no-frac"
        ),
        # 1795000000 s is 2026-11-18T11:06:40Z
        pytest.param(
            1_795_000_000_123, b"2026-11-18T11:06:40.123Z", 1_795_000_000_123_000, id="epoch-millis"
        ),
        pytest.param(0, b"1970-01-01T00:00:00.000Z", 0, id="epoch-zero"),
    ],
)
def test_v1_event_time_forms(stamp: str | int, cell: bytes, micros: int) -> None:
    event = parse(ConsentV1, v1_body(message_timestamp=stamp))
    assert cells_of(event)[("cf1", b"message_timestamp")] == cell
    assert event.timestamp_micros() == micros


_MISSING = object()


@pytest.mark.parametrize(
    ("field", "value", "error_type", "loc", "msg_fragment"),
    [
        pytest.param("user", "not-a-uuid", "uuid_parsing", ("user",), "valid UUID", id="uuid-text"),
        pytest.param(
            "user",
            "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6",
            "uuid_parsing",
            ("user",),
            "valid UUID",
            id="uuid-short",
        ),
        pytest.param("user", 12345, "uuid_type", ("user",), "should be a string", id="uuid-number"),
        pytest.param(
            "domain", "examplecom", "string_pattern_mismatch", ("domain",), "", id="no-dot"
        ),
        pytest.param(
            "domain", "ex_ample.com", "string_pattern_mismatch", ("domain",), "", id="underscore"
        ),
        pytest.param(
            "domain", "-example.com", "string_pattern_mismatch", ("domain",), "", id="lead-hyphen"
        ),
        pytest.param(
            "domain", "a" * 64 + ".com", "string_pattern_mismatch", ("domain",), "", id="label-64"
        ),
        pytest.param(
            "domain",
            ".".join(["a" * 63] * 4),
            "string_too_long",
            ("domain",),
            "at most 253",
            id="domain-255",
        ),
        pytest.param("domain", 42, "string_type", ("domain",), "", id="domain-number"),
        pytest.param("services", "essential-1", "list_type", ("services",), "", id="not-a-list"),
        pytest.param(
            "services",
            ["Essential-1"],
            "string_pattern_mismatch",
            ("services", 0),
            "",
            id="service-upper",
        ),
        pytest.param(
            "services",
            ["essential-1", "essential"],
            "string_pattern_mismatch",
            ("services", 1),
            "",
            id="service-no-number",
        ),
        pytest.param(
            "services",
            ["essential-12345"],
            "string_pattern_mismatch",
            ("services", 0),
            "",
            id="service-5-digits",
        ),
        pytest.param(
            "services",
            ["essential-1", "ads-2", "essential-1"],
            "value_error",
            ("services",),
            "service 'essential-1' is listed twice",
            id="duplicate",
        ),
        pytest.param(
            "services",
            [f"svc-{i}" for i in range(65)],
            "too_long",
            ("services",),
            "at most 64 items",
            id="65-services",
        ),
        pytest.param(
            "message_timestamp",
            "2026-11-24T06:40:53.123",
            "value_error",
            ("message_timestamp",),
            "RFC 3339 timestamp needs an offset (e.g. Z or +01:00)",
            id="naive",
        ),
        pytest.param(
            "message_timestamp",
            True,
            "value_error",
            ("message_timestamp",),
            "must be an RFC 3339 string or epoch milliseconds, not a boolean",
            id="boolean",
        ),
        # null is "no timestamp": refused as missing, or given the --missing_event_time fallback
        pytest.param(
            "message_timestamp", None, "missing", ("message_timestamp",), "required", id="null"
        ),
        pytest.param(
            "message_timestamp",
            -1,
            "value_error",
            ("message_timestamp",),
            "epoch time out of range",
            id="millis-negative",
        ),
        pytest.param(
            "message_timestamp",
            253_402_300_800_000,  # 10000-01-01T00:00:00Z
            "value_error",
            ("message_timestamp",),
            "epoch time out of range",
            id="millis-year-10000",
        ),
        pytest.param(
            "message_timestamp",
            "1795502453123",
            "value_error",
            ("message_timestamp",),
            "epoch time must be a JSON number, not a string",
            id="digits-in-a-string",
        ),
        pytest.param(
            "message_timestamp",
            float("inf"),
            "value_error",
            ("message_timestamp",),
            "",
            id="infinity",
        ),
        pytest.param(
            "domain",
            "b\u00fccher.de",
            "value_error",
            ("domain",),
            "send an internationalised name in its xn-- form",
            id="unicode-domain",
        ),
        pytest.param(
            "services",
            ["essential-1", "essential-1 "],
            "value_error",
            ("services",),
            "service 'essential-1' is listed twice",
            id="duplicate-after-strip",
        ),
        pytest.param(
            "services",
            ["a" * 60 + "_bcd-1"],
            "string_too_long",
            ("services", 0),
            "at most 64",
            id="service-65-chars",
        ),
        pytest.param(
            "message_timestamp",
            "yesterday",
            "value_error",
            ("message_timestamp",),
            "not an RFC 3339 timestamp: 'yesterday'",
            id="not-a-date",
        ),
        pytest.param("extra", 1, "extra_forbidden", ("extra",), "", id="extra-field"),
        pytest.param("user", _MISSING, "missing", ("user",), "", id="missing-user"),
        pytest.param("domain", _MISSING, "missing", ("domain",), "", id="missing-domain"),
        pytest.param("services", _MISSING, "missing", ("services",), "", id="missing-services"),
        pytest.param(
            "message_timestamp",
            _MISSING,
            "missing",
            ("message_timestamp",),
            "",
            id="missing-timestamp",
        ),
    ],
)
def test_v1_invalid(
    field: str, value: object, error_type: str, loc: tuple[Any, ...], msg_fragment: str
) -> None:
    body = v1_body()
    if value is _MISSING:
        del body[field]
    else:
        body[field] = value
    with pytest.raises(ValidationError) as exc:
        parse(ConsentV1, body)
    got_type, got_loc, got_msg = only_error(exc)
    assert (got_type, got_loc) == (error_type, loc)
    assert msg_fragment in got_msg


def test_v1_largest_epoch_millis_is_accepted() -> None:
    event = parse(ConsentV1, v1_body(message_timestamp=253_402_300_799_999))
    assert cells_of(event)[("cf1", b"message_timestamp")] == b"9999-12-31T23:59:59.999Z"
    assert event.timestamp_micros() == 253_402_300_799_999_000


def test_v1_event_is_frozen() -> None:
    event = ConsentV1.model_validate_json(json.dumps(v1_body()))
    with pytest.raises(ValidationError, match="frozen"):
        event.domain = "other.com"
    assert event.domain == "example.com"


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["max", "min"]
)
def test_v1_timestamp_overflowing_utc_is_a_validation_error(stamp: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse(ConsentV1, v1_body(message_timestamp=stamp))
    assert only_error(exc)[:2] == ("value_error", ("message_timestamp",))


@pytest.mark.parametrize(
    "stamp",
    [
        "20261124T064053Z",
        "2026-W48-2T06:40:53Z",
        "2026-11-24T06:40Z",
        "2026-11-24T06:40:53+02:00:30",
    ],
    ids=["basic", "week-date", "no-seconds", "offset-seconds"],
)
def test_v1_non_rfc3339_timestamps_are_rejected(stamp: str) -> None:
    with pytest.raises(ValidationError):
        parse(ConsentV1, v1_body(message_timestamp=stamp))


def test_v1_non_ascii_domain_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse(ConsentV1, v1_body(domain="\u212aexample.com"))


# --- consent.v2 --------------------------------------------------------------------------


def test_v2_cells_keep_v1_readers_working() -> None:
    event = parse(ConsentV2, v2_body(domain="News.Example.org"))

    assert event.row_key() == "news.example.org#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
    assert [(c.family, c.qualifier, c.value) for c in event.cells()] == [
        ("cf1", b"services", b'["essential-1","analytics-12"]'),
        ("cf1", b"message_timestamp", b"2026-11-24T06:40:53.123Z"),
        (
            "cf1",
            b"services_detail",
            b'[{"granted":true,"id":"essential-1"},{"granted":false,"id":"ads-2"},'
            b'{"granted":true,"id":"analytics-12"}]',
        ),
        ("cf1", b"region", b"eu"),
    ]
    assert event.timestamp_micros() == STAMP_MICROS


def test_v2_nothing_granted_gives_empty_v1_services() -> None:
    body = v2_body(services=[{"id": "ads-2", "granted": False}], region="apac")
    cells = cells_of(parse(ConsentV2, body))
    assert cells[("cf1", b"services")] == b"[]"
    assert cells[("cf1", b"services_detail")] == b'[{"granted":false,"id":"ads-2"}]'
    assert cells[("cf1", b"region")] == b"apac"


@pytest.mark.parametrize("region", ["eu", "us", "apac", "latam", "mea"])
def test_v2_accepts_every_region(region: str) -> None:
    assert cells_of(parse(ConsentV2, v2_body(region=region)))[("cf1", b"region")] == region.encode()


@pytest.mark.parametrize(
    ("overrides", "error_type", "loc"),
    [
        pytest.param({"region": "EU"}, "literal_error", ("region",), id="region-upper"),
        pytest.param({"region": "africa"}, "literal_error", ("region",), id="region-unknown"),
        pytest.param({"region": None}, "literal_error", ("region",), id="region-null"),
        pytest.param(
            {"services": [{"id": "ads-2"}]}, "missing", ("services", 0, "granted"), id="no-granted"
        ),
        pytest.param(
            {"services": [{"id": "ads-2", "granted": True, "why": "x"}]},
            "extra_forbidden",
            ("services", 0, "why"),
            id="grant-extra",
        ),
        pytest.param(
            {"services": [{"id": "Ads-2", "granted": True}]},
            "string_pattern_mismatch",
            ("services", 0, "id"),
            id="grant-bad-id",
        ),
        pytest.param(
            {"services": [{"id": "ads-2", "granted": True}, {"id": "ads-2", "granted": False}]},
            "value_error",
            ("services",),
            id="grant-duplicate",
        ),
        pytest.param(
            {"services": [{"id": "ads-2", "granted": "maybe"}]},
            "bool_type",  # strict: a string is never a boolean
            ("services", 0, "granted"),
            id="granted-not-bool",
        ),
    ],
)
def test_v2_invalid(overrides: dict[str, Any], error_type: str, loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as exc:
        parse(ConsentV2, v2_body(**overrides))
    assert only_error(exc)[:2] == (error_type, loc)


def test_v2_missing_region() -> None:
    body = v2_body()
    del body["region"]
    with pytest.raises(ValidationError) as exc:
        parse(ConsentV2, body)
    assert only_error(exc)[:2] == ("missing", ("region",))


# --- telemetry.v1 ------------------------------------------------------------------------


def test_telemetry_row_key_and_cells() -> None:
    event = parse(TelemetryV1, telemetry_body())

    assert event.row_key() == "sensor-0042#1795502453123"
    assert [(c.family, c.qualifier, c.value) for c in event.cells()] == [
        ("m", b"firmware", b"1.4.2"),
        ("m", b"recorded_at", b"2026-11-24T06:40:53.123Z"),
        # readings sorted by name; JSON 40 is stored as the float 40.0
        ("r", b"humidity_pct", b"40.0"),
        ("r", b"temp_c", b"21.5"),
    ]
    assert event.timestamp_micros() == STAMP_MICROS


def test_telemetry_row_key_is_zero_padded_to_13_digits() -> None:
    # 999999999999 ms = 2001-09-09T01:46:39.999Z, only 12 digits
    event = parse(TelemetryV1, telemetry_body(recorded_at=999_999_999_999))
    assert event.row_key() == "sensor-0042#0999999999999"
    assert cells_of(event)[("m", b"recorded_at")] == b"2001-09-09T01:46:39.999Z"


def test_telemetry_offset_timestamp_gives_utc_key() -> None:
    event = parse(TelemetryV1, telemetry_body(recorded_at="2026-11-24T07:40:53.123999+01:00"))
    assert event.row_key() == "sensor-0042#1795502453123"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (0.1, b"0.1"),
        (1e-07, b"1e-07"),
        (1e20, b"1e+20"),
        (-273.15, b"-273.15"),
        (0, b"0.0"),
        (1.0000000000000002, b"1.0000000000000002"),
    ],
)
def test_telemetry_readings_are_stored_as_repr_of_float(value: float, stored: bytes) -> None:
    event = parse(TelemetryV1, telemetry_body(readings={"v": value}))
    assert cells_of(event)[("r", b"v")] == stored


def test_telemetry_64_readings_accepted() -> None:
    readings = {f"r{i}": float(i) for i in range(64)}
    event = parse(TelemetryV1, telemetry_body(readings=readings))
    assert len([c for c in event.cells() if c.family == "r"]) == 64


def parse_json_text(model: type[MappedEvent], text: str) -> MappedEvent:
    return model.model_validate_json(text)


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e400"], ids=["nan", "inf", "-inf", "overflow"]
)
def test_telemetry_non_finite_json_readings_rejected(literal: str) -> None:
    text = (
        '{"device_id": "d-1", "recorded_at": 1795502453123, "firmware": "1.0.0", '
        f'"readings": {{"temp_c": {literal}}}}}'
    )
    with pytest.raises(ValidationError) as exc:
        parse_json_text(TelemetryV1, text)
    assert only_error(exc)[:2] == ("finite_number", ("readings", "temp_c"))


@pytest.mark.parametrize(
    ("overrides", "error_type", "loc"),
    [
        pytest.param({"readings": {}}, "too_short", ("readings",), id="empty-readings"),
        pytest.param(
            {"readings": {f"r{i}": 1.0 for i in range(65)}},
            "too_long",
            ("readings",),
            id="65-readings",
        ),
        pytest.param(
            {"readings": {"Temp": 1.0}},
            "string_pattern_mismatch",
            ("readings", "Temp", "[key]"),
            id="reading-upper",
        ),
        pytest.param(
            {"readings": {"1temp": 1.0}},
            "string_pattern_mismatch",
            ("readings", "1temp", "[key]"),
            id="reading-digit-first",
        ),
        pytest.param(
            {"readings": {"temp-c": 1.0}},
            "string_pattern_mismatch",
            ("readings", "temp-c", "[key]"),
            id="reading-hyphen",
        ),
        pytest.param(
            {"readings": {"t" * 65: 1.0}},
            "string_pattern_mismatch",
            ("readings", "t" * 65, "[key]"),
            id="reading-65-chars",
        ),
        pytest.param(
            {"readings": {"temp_c": "NaN"}},
            "float_type",  # strict: a string is never a number
            ("readings", "temp_c"),
            id="nan-string",
        ),
        pytest.param(
            {"readings": {"temp_c": "warm"}},
            "float_type",
            ("readings", "temp_c"),
            id="reading-text",
        ),
        pytest.param({"readings": [1.0]}, "dict_type", ("readings",), id="readings-list"),
        pytest.param({"device_id": ""}, "string_too_short", ("device_id",), id="device-empty"),
        pytest.param(
            {"device_id": "dev 1"},
            "string_pattern_mismatch",
            ("device_id",),
            id="device-space",
        ),
        pytest.param(
            {"device_id": "dev#1"},
            "string_pattern_mismatch",
            ("device_id",),
            id="device-hash",
        ),
        pytest.param(
            {"firmware": "1.4"}, "string_pattern_mismatch", ("firmware",), id="firmware-2-parts"
        ),
        pytest.param(
            {"recorded_at": "2026-11-24T06:40:53"},
            "value_error",
            ("recorded_at",),
            id="recorded-naive",
        ),
        pytest.param({"battery": 3}, "extra_forbidden", ("battery",), id="extra-field"),
    ],
)
def test_telemetry_invalid(
    overrides: dict[str, Any], error_type: str, loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as exc:
        parse(TelemetryV1, telemetry_body(**overrides))
    assert only_error(exc)[:2] == (error_type, loc)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(TelemetryV1, telemetry_body(readings={"temp_c": True}), id="reading-true"),
        pytest.param(TelemetryV1, telemetry_body(readings={"temp_c": "21.5"}), id="reading-str"),
        pytest.param(
            ConsentV2, v2_body(services=[{"id": "ads-2", "granted": "no"}]), id="granted-no"
        ),
        pytest.param(ConsentV2, v2_body(services=[{"id": "ads-2", "granted": 0}]), id="granted-0"),
    ],
)
def test_lax_coercions_are_rejected(model: type[MappedEvent], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(model, body)
