"""original_message undoes dead_letter_message; redrive_count rides along as an original."""

import base64
import json
from datetime import UTC, datetime

import pytest

from stream.pipeline.letters import (
    REDRIVE_COUNT_ATTRIBUTE,
    EnvelopeError,
    dead_letter_message,
    original_message,
    redrive_count,
)
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

PUBLISHED = datetime(2026, 11, 24, 6, 40, 53, 123456, tzinfo=UTC)
BODY = b'{"user": "0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11", "services": ["marketing-6"]}'


def dead(attributes: dict[str, str], data: bytes = BODY) -> DeadLetter:
    raw = RawMessage(data=data, attributes=attributes, message_id="42", publish_time=PUBLISHED)
    return DeadLetter(
        raw=raw,
        kind=ErrorKind.UNKNOWN_SERVICE,
        error="consent.v1: services: unknown service 'marketing-6' (not in the service catalog "
        "of 25 ids)",
        stage=Stage.PARSE,
        schema="consent.v1",
    )


def test_the_redrive_counter_is_carried_into_a_new_dead_letter() -> None:
    attributes = {"schema": "consent.v1", REDRIVE_COUNT_ATTRIBUTE: "2"}
    data, published = dead_letter_message(dead(attributes))
    assert data == BODY
    assert published["redrive_count"] == "2"
    assert published["deadletter_kind"] == "unknown_service"


def test_the_redrive_counter_is_carried_inside_an_envelope() -> None:
    attributes = {f"a{i:02d}": str(i) for i in range(97)} | {REDRIVE_COUNT_ATTRIBUTE: "1"}
    data, published = dead_letter_message(dead(attributes))
    assert published["deadletter_envelope"] == "json"
    assert REDRIVE_COUNT_ATTRIBUTE not in published  # only ours outside the envelope
    assert json.loads(data)["attributes"][REDRIVE_COUNT_ATTRIBUTE] == "1"


@pytest.mark.parametrize("originals", [0, 1, 94, 95, 98, 100])
def test_original_message_undoes_dead_letter_message(originals: int) -> None:
    attributes = {f"attr_{i:03d}": f"value {i}" for i in range(originals)}
    assert original_message(*dead_letter_message(dead(attributes))) == (BODY, attributes)


def test_every_deadletter_and_pubsub_forwarding_attribute_is_removed() -> None:
    attributes = {
        "schema": "consent.v1",
        "loadgen_id": "run:7",
        "redrive_count": "1",
        "deadletter_kind": "missing_field",
        "deadletter_anything_new": "x",
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "request_buffer-sub",
    }
    assert original_message(b"x", attributes) == (
        b"x",
        {"schema": "consent.v1", "loadgen_id": "run:7", "redrive_count": "1"},
    )


def test_an_envelope_inside_an_envelope_is_unwrapped_whole() -> None:
    # A letter republished as it was (envelope and all) and refused again: no nesting.
    originals = {f"a{i:02d}": "v" for i in range(98)}
    data, letter_attributes = dead_letter_message(dead(originals))
    again = {**letter_attributes, "schema": "consent.v1"}
    outer = {
        "data_base64": base64.b64encode(data).decode(),
        "attributes": again,
    }
    marked = {"deadletter_kind": "unexpected_field", "deadletter_envelope": "json"}
    assert original_message(json.dumps(outer).encode(), marked) == (BODY, originals)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"attributes": {}}',
        b'{"data_base64": "***", "attributes": {}}',
        b'{"data_base64": "eA==", "attributes": {"a": 1}}',
        b'{"data_base64": "eA==", "attributes": ["a"]}',
    ],
    ids=["not-json", "a-list", "no-data", "bad-base64", "number-attribute", "list-attributes"],
)
def test_a_marked_letter_that_is_not_an_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a dead-letter envelope"):
        original_message(data, {"deadletter_envelope": "json"})


def test_envelopes_nested_without_end_are_refused() -> None:
    data = b"x"
    for _ in range(9):
        wrapped = {"data_base64": base64.b64encode(data).decode(), "attributes": {}}
        wrapped["attributes"] = {"deadletter_envelope": "json"}
        data = json.dumps(wrapped).encode()
    with pytest.raises(EnvelopeError, match="nested more than 8"):
        original_message(data, {"deadletter_envelope": "json"})


def test_eight_nested_envelopes_are_unwrapped() -> None:
    data, attributes = b"x", {"k": "v"}
    for _ in range(8):
        data = json.dumps(
            {"data_base64": base64.b64encode(data).decode(), "attributes": attributes}
        ).encode()
        attributes = {"deadletter_envelope": "json"}
    assert original_message(data, attributes) == (b"x", {"k": "v"})


@pytest.mark.parametrize(
    ("value", "count"),
    [(None, 0), ("0", 0), ("2", 2), (" 3 ", 3), ("-1", 0), ("two", 0), ("²", 0), ("", 0)],
)
def test_redrive_count(value: str | None, count: int) -> None:
    attributes = {} if value is None else {REDRIVE_COUNT_ATTRIBUTE: value}
    assert redrive_count(attributes) == count
