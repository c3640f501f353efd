"""mutation_entry (event -> MutateRows entry) and is_permanent (per-row error policy)."""

import json
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import RowMutationEntry, SetCell
from google.cloud.bigtable_v2.types import MutateRowsRequest

from schemas.base import MappedEvent
from schemas.consent import ConsentV1, ConsentV2
from schemas.telemetry import TelemetryV1
from stream.pipeline.io.batch_writer import is_permanent, mutation_entry
from stream.pipeline.messages import RawMessage, ValidEvent

USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
# 2026-11-24T06:40:53.123456Z -> cell timestamp 1795502453123 ms, in microseconds
TS = 1_795_502_453_123_000


def valid(model: type[MappedEvent], body: dict[str, Any]) -> ValidEvent:
    data = json.dumps(body).encode()
    return ValidEvent(event=model.model_validate_json(data), raw=RawMessage(data=data))


def consent_v1() -> ValidEvent:
    body = {
        "user": USER,
        "domain": "Example.com",
        "services": ["essential-1", "ads-2"],
        "message_timestamp": "2026-11-24T07:40:53.123456+01:00",
    }
    return valid(ConsentV1, body)


def telemetry() -> ValidEvent:
    body = {
        "device_id": "sensor-7",
        "recorded_at": "2026-11-24T06:40:53.123456Z",
        "readings": {"temp_c": 21.5, "co2_ppm": 415},
        "firmware": "2.0.1",
    }
    return valid(TelemetryV1, body)


def described(entry: RowMutationEntry) -> list[tuple[str, bytes, bytes, int]]:
    assert all(type(m) is SetCell for m in entry.mutations)
    return [(m.family, m.qualifier, m.new_value, m.timestamp_micros) for m in entry.mutations]


def test_consent_v1_entry() -> None:
    entry = mutation_entry(consent_v1().event)
    assert entry.row_key == b"example.com#0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
    assert described(entry) == [
        ("cf1", b"services", b'["essential-1","ads-2"]', TS),
        ("cf1", b"message_timestamp", b"2026-11-24T06:40:53.123Z", TS),
    ]


def test_consent_v2_entry() -> None:
    body = {
        "user": USER,
        "domain": "example.com",
        "services": [{"id": "essential-1", "granted": True}, {"id": "ads-2", "granted": False}],
        "region": "latam",
        "message_timestamp": 1_795_502_453_123,
    }
    assert described(mutation_entry(valid(ConsentV2, body).event)) == [
        ("cf1", b"services", b'["essential-1"]', TS),
        ("cf1", b"message_timestamp", b"2026-11-24T06:40:53.123Z", TS),
        (
            "cf1",
            b"services_detail",
            b'[{"granted":true,"id":"essential-1"},{"granted":false,"id":"ads-2"}]',
            TS,
        ),
        ("cf1", b"region", b"latam", TS),
    ]


def test_telemetry_entry() -> None:
    entry = mutation_entry(telemetry().event)
    assert entry.row_key == b"sensor-7#1795502453123"
    assert described(entry) == [
        ("m", b"firmware", b"2.0.1", TS),
        ("m", b"recorded_at", b"2026-11-24T06:40:53.123Z", TS),
        ("r", b"co2_ppm", b"415.0", TS),
        ("r", b"temp_c", b"21.5", TS),
    ]


def test_ingest_time_cell_is_optional_and_at_the_event_timestamp() -> None:
    # ingested at 2026-11-24T06:41:00.987654Z: stored as epoch millis text
    with_ingest = mutation_entry(consent_v1().event, ingest_micros=1_795_502_460_987_654)
    assert described(with_ingest)[-1] == ("cf1", b"ingested_at", b"1795502460987", TS)
    assert len(with_ingest.mutations) == 3
    assert len(mutation_entry(consent_v1().event).mutations) == 2


def test_telemetry_ingest_time_goes_to_the_meta_family() -> None:
    entry = mutation_entry(telemetry().event, ingest_micros=1_795_502_460_000_000)
    assert described(entry)[-1] == ("m", b"ingested_at", b"1795502460000", TS)


def test_entries_are_idempotent() -> None:
    assert mutation_entry(consent_v1().event).is_idempotent() is True


def test_building_twice_gives_equal_fresh_entries() -> None:
    event = consent_v1()
    first = mutation_entry(event.event, ingest_micros=1_795_502_460_000_000)
    first._to_pb()  # what sending does with it
    second = mutation_entry(event.event, ingest_micros=1_795_502_460_000_000)

    assert first is not second
    assert all(a is not b for a, b in zip(first.mutations, second.mutations, strict=True))
    assert first._to_dict() == second._to_dict()
    assert described(first) == described(second)
    assert len(second.mutations) == 3


@pytest.mark.parametrize(
    ("cause", "permanent"),
    [
        pytest.param(gexc.InvalidArgument("bad"), True, id="invalid-argument"),
        pytest.param(gexc.NotFound("no table"), True, id="not-found"),
        pytest.param(gexc.FailedPrecondition("x"), True, id="failed-precondition"),
        pytest.param(gexc.OutOfRange("x"), True, id="out-of-range"),
        pytest.param(gexc.ServiceUnavailable("x"), False, id="unavailable"),
        pytest.param(gexc.DeadlineExceeded("x"), False, id="deadline"),
        pytest.param(gexc.InternalServerError("x"), False, id="internal"),
        pytest.param(gexc.Aborted("x"), False, id="aborted"),
        pytest.param(gexc.ResourceExhausted("x"), False, id="resource-exhausted"),
        pytest.param(RuntimeError("x"), False, id="other-exception"),
        pytest.param(None, False, id="no-cause"),
    ],
)
def test_is_permanent(cause: BaseException | None, permanent: bool) -> None:
    assert is_permanent(cause) is permanent


def test_entry_request_proto_is_the_clients_own() -> None:
    """The directly built request proto is byte for byte what the data client would build."""
    for entry in (
        mutation_entry(consent_v1().event, ingest_micros=1_795_502_460_987_654),
        mutation_entry(telemetry().event),
    ):
        plain = RowMutationEntry(entry.row_key, list(entry.mutations))
        assert type(entry)._to_pb is not RowMutationEntry._to_pb
        ours = MutateRowsRequest(entries=[entry._to_pb()], table_name="t")
        theirs = MutateRowsRequest(entries=[plain._to_pb()], table_name="t")
        assert MutateRowsRequest.serialize(ours) == MutateRowsRequest.serialize(theirs)
        assert len(ours.entries[0].mutations) == len(entry.mutations) >= 2


def test_without_patches_the_entry_is_the_clients_own() -> None:
    entry = mutation_entry(consent_v1().event, raw=False)
    assert type(entry) is RowMutationEntry
    assert entry.is_idempotent()
