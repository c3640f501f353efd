"""dead_letter_message: originals kept, deadletter_* added, Pub/Sub limits respected."""

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from stream.pipeline.letters import dead_letter_message
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

PUBLISHED = datetime(2026, 11, 24, 6, 40, 53, 123456, tzinfo=UTC)


def dead_letter_attributes(dead: DeadLetter) -> dict[str, str]:
    return dead_letter_message(dead)[1]


def letter(
    attributes: dict[str, str] | None = None,
    error: str = "consent.v1: domain: Field required",
    publish_time: datetime | None = PUBLISHED,
) -> DeadLetter:
    raw = RawMessage(
        data=b"{}",
        attributes={"schema": "consent.v1", "origin": "test"} if attributes is None else attributes,
        message_id="1234567890",
        publish_time=publish_time,
    )
    return DeadLetter(
        raw=raw, kind=ErrorKind.MISSING_FIELD, error=error, stage=Stage.PARSE, schema="consent.v1"
    )


def test_originals_kept_and_deadletter_attributes_added() -> None:
    assert dead_letter_attributes(letter()) == {
        "schema": "consent.v1",
        "origin": "test",
        "deadletter_kind": "missing_field",
        "deadletter_error": "consent.v1: domain: Field required",
        "deadletter_stage": "parse",
        "deadletter_message_id": "1234567890",
        "deadletter_schema": "consent.v1",
        "deadletter_publish_time": "2026-11-24T06:40:53.123Z",
    }


def test_write_stage_letter() -> None:
    raw = RawMessage(data=b"x", attributes={}, message_id="m-9")
    write = DeadLetter(
        raw=raw,
        kind=ErrorKind.WRITE_REJECTED,
        error="Bigtable rejected row 'k': 400 bad",
        stage=Stage.WRITE,
        schema="telemetry.v1",
    )
    assert dead_letter_attributes(write) == {
        "deadletter_kind": "write_rejected",
        "deadletter_error": "Bigtable rejected row 'k': 400 bad",
        "deadletter_stage": "write",
        "deadletter_message_id": "m-9",
        "deadletter_schema": "telemetry.v1",
    }


def test_publish_time_with_offset_is_written_in_utc() -> None:
    local = datetime(2026, 11, 24, 8, 40, 53, 999999, tzinfo=timezone(timedelta(hours=2)))
    attrs = dead_letter_attributes(letter(publish_time=local))
    assert attrs["deadletter_publish_time"] == "2026-11-24T06:40:53.999Z"


def test_no_publish_time_no_attribute() -> None:
    assert "deadletter_publish_time" not in dead_letter_attributes(letter(publish_time=None))


def test_the_raw_message_is_not_modified() -> None:
    dead = letter()
    dead_letter_attributes(dead)
    assert dead.raw.attributes == {"schema": "consent.v1", "origin": "test"}


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        pytest.param("a" * 2000, "a" * 1024, id="ascii"),
        # 'é' is 2 bytes: bytes 1023-1024 would split it, so it is dropped whole
        pytest.param("a" * 1023 + "\u00e9" + "b" * 10, "a" * 1023, id="split-2-byte"),
        # '€' is 3 bytes
        pytest.param("a" * 1022 + "\u20ac", "a" * 1022, id="split-3-byte"),
        pytest.param("a" * 1022 + "\u00e9", "a" * 1022 + "\u00e9", id="exactly-1024"),
        pytest.param("\u20ac" * 400, "\u20ac" * 341, id="all-3-byte"),
    ],
)
def test_error_is_cut_to_1024_bytes_of_valid_utf8(error: str, stored: str) -> None:
    value = dead_letter_attributes(letter(error=error))["deadletter_error"]
    assert value == stored
    assert len(value.encode("utf-8")) <= 1024


@pytest.mark.parametrize(("originals", "inline"), [(94, True), (95, False), (100, False)])
def test_attribute_count_stays_within_100(originals: int, inline: bool) -> None:
    attributes = {f"a{i:02d}": str(i) for i in range(originals)}
    data, result = dead_letter_message(letter(attributes=attributes))

    assert len(result) <= 100
    ours = {
        "deadletter_kind",
        "deadletter_error",
        "deadletter_stage",
        "deadletter_message_id",
        "deadletter_schema",
        "deadletter_publish_time",
    }
    if inline:
        assert len(result) == 100
        assert set(result) == ours | set(attributes)
        assert data == b"{}"
    else:
        # No room: the originals travel in a JSON envelope with the raw bytes.
        assert set(result) == ours | {"deadletter_envelope"}
        assert result["deadletter_envelope"] == "json"
        envelope = json.loads(data)
        assert envelope["attributes"] == attributes
        assert base64.b64decode(envelope["data_base64"]) == b"{}"


def test_95_originals_fit_without_publish_time() -> None:
    attributes = {f"a{i:02d}": str(i) for i in range(95)}
    result = dead_letter_attributes(letter(attributes=attributes, publish_time=None))
    assert len(result) == 100
    assert result["a94"] == "94"


def test_every_attribute_value_fits_pubsub_limit_with_99_originals() -> None:
    attributes = {f"attr_{i:02d}": f"value_{i:02d}" for i in range(99)}
    result = dead_letter_attributes(letter(attributes=attributes))
    assert len(result) <= 100
    assert max(len(value.encode()) for value in result.values()) <= 1024
