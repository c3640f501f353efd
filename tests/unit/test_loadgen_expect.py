"""The ledger's oracle maps bodies to rows by the documented contract (values written by hand)."""

import pytest

from loadgen.expect import PUBLISH_TIME, ExpectedRow, UnmappableError, event_time, expected_row

USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
MICROS = 1_795_502_453_123_000  # 2026-11-24T06:40:53.123Z


def test_consent_v1() -> None:
    body = {
        "user": USER.upper(),
        "domain": " Example.COM. ",
        "services": ["web_performance_and_analytics-3 ", "essential-1"],
        "message_timestamp": "2026-11-24T08:40:53.123999+02:00",
    }
    assert expected_row("consent.v1", body) == ExpectedRow(
        "consent",
        f"example.com#{USER}",
        MICROS,
        {
            "cf1:services": '["web_performance_and_analytics-3","essential-1"]',
            "cf1:message_timestamp": "2026-11-24T06:40:53.123Z",
        },
    )


def test_consent_v2() -> None:
    body = {
        "user": USER,
        "domain": "example.com",
        "services": [{"id": "ads-2", "granted": False}, {"id": "essential-1", "granted": True}],
        "region": "eu",
        "message_timestamp": 1_795_502_453_123,
    }
    assert expected_row("consent.v2", body).cells == {
        "cf1:services": '["essential-1"]',
        "cf1:services_detail": (
            '[{"granted":false,"id":"ads-2"},{"granted":true,"id":"essential-1"}]'
        ),
        "cf1:region": "eu",
        "cf1:message_timestamp": "2026-11-24T06:40:53.123Z",
    }


def test_telemetry() -> None:
    body = {
        "device_id": "sensor-1",
        "recorded_at": "2026-11-24T06:40:53.123Z",
        "readings": {"t": 21, "h": 40.25},
        "firmware": "1.0.0",
    }
    assert expected_row("telemetry.v1", body) == ExpectedRow(
        "telemetry",
        "sensor-1#1795502453123",
        MICROS,
        {"m:firmware": "1.0.0", "m:recorded_at": "2026-11-24T06:40:53.123Z", "r:t": "21.0",
         "r:h": "40.25"},
    )  # fmt: skip


def test_absent_time_is_the_publish_time_only_when_told() -> None:
    body = {"user": USER, "domain": "example.com", "services": []}
    with pytest.raises(UnmappableError):
        expected_row("consent.v1", body)
    row = expected_row("consent.v1", body, publish_time=True)
    assert (row.timestamp_micros, row.cells) == (PUBLISH_TIME, {"cf1:services": "[]"})


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("2026-11-24T06:40:53.123Z", MICROS),
        (" 2026-11-24T06:40:53.1239Z", MICROS),
        (1_795_502_453_123, MICROS),
        (1_795_502_453.123, MICROS),
        (1_795_502_453, MICROS - 123_000),
    ],
)
def test_event_times(value: object, micros: int) -> None:
    moment = event_time(value)
    assert (moment.timestamp() * 1_000_000) // 1000 * 1000 == micros


@pytest.mark.parametrize(
    "body",
    [
        {"domain": "example.com", "services": [], "message_timestamp": 0},
        {"user": "nope", "domain": "example.com", "services": [], "message_timestamp": 0},
        {"user": USER, "domain": 7, "services": [], "message_timestamp": 0},
        {"user": USER, "domain": "example.com", "services": "x", "message_timestamp": 0},
        {"user": USER, "domain": "example.com", "services": [], "message_timestamp": "noon"},
        {"user": USER, "domain": "example.com", "services": [], "message_timestamp": True},
        {"user": USER, "domain": "example.com", "services": [],
         "message_timestamp": "2026-11-24T06:40:53"},
    ],
)  # fmt: skip
def test_unmappable_bodies(body: dict[str, object]) -> None:
    with pytest.raises(UnmappableError):
        expected_row("consent.v1", body)
