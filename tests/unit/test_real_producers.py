"""What real producers send, message by message: accepted with its exact row, or refused on purpose.

The seed product (../shared/SEED.md) is the ground truth: every message its request generator
and its `scale_endpoint` function can produce must become its row. The other variants are
what producers commonly send; each rejection here is a documented choice (README, "Message
types"). Expected keys, cells and timestamps are written out by hand.
"""

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, ValidEvent
from stream.pipeline.validate import EventTimeFallback, MissingEventTime, ParseRules, validate

NOW = datetime(2026, 11, 24, 6, 40, 53, tzinfo=UTC)  # 1795502453 s after the epoch
PUBLISHED = datetime(2026, 11, 24, 6, 40, 1, 987_654, tzinfo=UTC)
USER = "0b5f8a8e-3d4c-4f4e-9a57-1c2d3e4f5a6b"
# 2026-11-24T06:40:00.250Z = 1795502400 s + 250 ms
STAMP = "2026-11-24T06:40:00.250Z"
STAMP_MICROS = 1_795_502_400_250_000

# The seed's catalogue, written out (SEED.md): five categories x 1..5, underscores included.
SEED_SERVICES = [
    *(f"essential-{n}" for n in range(1, 6)),
    *(f"web_performance_and_analytics-{n}" for n in range(1, 6)),
    *(f"functional-{n}" for n in range(1, 6)),
    *(f"personalization-{n}" for n in range(1, 6)),
    *(f"marketing-{n}" for n in range(1, 6)),
]
SEED_DOMAINS = [
    "codecentric.de",
    "codecentric.com",
    "devdriday.net",
    "example.com",
    "onlineshoppingmania.de",
]


def raw(data: bytes | str, **attributes: str) -> RawMessage:
    body = data.encode() if isinstance(data, str) else data
    return RawMessage(body, attributes, message_id="m-1", publish_time=PUBLISHED)


def body(**fields: Any) -> str:
    """A message as the seed's function publishes it: json.dumps' default separators."""
    message: dict[str, Any] = {"user": USER, "domain": "example.com", "services": ["essential-1"]}
    message.update(fields)
    message.setdefault("message_timestamp", STAMP)
    return json.dumps({k: v for k, v in message.items() if v is not _DROP})


_DROP = object()


DEFAULT = ParseRules()


def accepted(message: RawMessage, rules: ParseRules = DEFAULT) -> ValidEvent:
    result = validate(message, rules, NOW)
    assert isinstance(result, ValidEvent), result
    return result


def refused(message: RawMessage, rules: ParseRules = DEFAULT) -> DeadLetter:
    result = validate(message, rules, NOW)
    assert isinstance(result, DeadLetter), result
    return result


def row(event: ValidEvent) -> tuple[str, dict[str, bytes], int]:
    cells = {cell.qualifier.decode(): cell.value for cell in event.event.cells()}
    return event.event.row_key(), cells, event.event.timestamp_micros()


# --- the seed's own messages ------------------------------------------------------------


def test_every_seed_service_and_domain_is_accepted_as_its_row() -> None:
    for domain in SEED_DOMAINS:
        event = accepted(raw(body(domain=domain, services=SEED_SERVICES[:24])))
        key, cells, micros = row(event)
        assert key == f"{domain}#{USER}"
        assert json.loads(cells["services"]) == SEED_SERVICES[:24]
        assert (cells["message_timestamp"], micros) == (STAMP.encode(), STAMP_MICROS)
    for service in SEED_SERVICES:
        assert row(accepted(raw(body(services=[service]))))[1]["services"] == (
            f'["{service}"]'.encode()
        )


def test_seed_generator_lines_stamped_as_scale_endpoint_stamps_them() -> None:
    """random.sample(SERVICES, random.randrange(25)), json.dumps, then message_timestamp added."""
    rng = random.Random(2021)
    for i in range(500):
        services = rng.sample(SEED_SERVICES, rng.randrange(25))
        line = json.dumps(
            {"user": USER, "domain": SEED_DOMAINS[i % 5], "services": services}
        )  # exactly the seed's request-file line
        stamped = json.loads(line)
        stamped["message_timestamp"] = "2026-11-24T06:40:00.250Z"  # context.timestamp
        key, cells, micros = row(accepted(raw(json.dumps(stamped))))
        assert key == f"{SEED_DOMAINS[i % 5]}#{USER}"
        assert cells["services"] == json.dumps(services, separators=(",", ":")).encode()
        assert micros == STAMP_MICROS


def test_an_empty_services_list_is_a_normal_seed_message() -> None:
    assert row(accepted(raw(body(services=[]))))[1]["services"] == b"[]"


def test_an_unstamped_request_line_is_missing_its_event_time_by_default() -> None:
    line = json.dumps({"user": USER, "domain": "example.com", "services": ["essential-1"]})
    letter = refused(raw(line))
    assert letter.kind is ErrorKind.MISSING_FIELD
    assert letter.error == "consent.v1: message_timestamp: Field required"


def test_publish_time_fallback_stamps_as_the_seed_function_did() -> None:
    rules = ParseRules(missing_event_time=EventTimeFallback(MissingEventTime.PUBLISH_TIME))
    line = json.dumps({"user": USER, "domain": "example.com", "services": ["essential-1"]})
    _, cells, micros = row(accepted(raw(line), rules))
    # 06:40:01.987654 -> the seed's format, milliseconds: 1795502401 s + 987 ms
    assert cells["message_timestamp"] == b"2026-11-24T06:40:01.987Z"
    assert micros == 1_795_502_401_987_000
    # null is "no timestamp" too; a message that has one keeps its own
    assert row(accepted(raw(body(message_timestamp=None)), rules))[2] == 1_795_502_401_987_000
    assert row(accepted(raw(body()), rules))[2] == STAMP_MICROS


def test_fixed_fallback_is_the_same_instant_for_every_line() -> None:
    instant = datetime(2021, 3, 5, tzinfo=UTC)  # 1614902400 s
    rules = ParseRules(
        max_event_age=NOW - instant,
        missing_event_time=EventTimeFallback(MissingEventTime.FIXED, instant),
    )
    line = json.dumps({"user": USER, "domain": "example.com", "services": []})
    assert row(accepted(raw(line), rules))[2] == 1_614_902_400_000_000


def test_file_mtime_fallback_reads_the_file_source_attribute() -> None:
    rules = ParseRules(missing_event_time=EventTimeFallback(MissingEventTime.FILE_MTIME))
    line = json.dumps({"user": USER, "domain": "example.com", "services": []})
    event = accepted(raw(line, source_mtime="2026-11-24T06:40:00.250Z"), rules)
    assert row(event)[2] == STAMP_MICROS
    assert refused(raw(line), rules).kind is ErrorKind.MISSING_FIELD  # no such attribute


# --- event-time forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "cell", "micros"),
    [
        pytest.param("2026-11-24T08:40:00.250+02:00", STAMP, STAMP_MICROS, id="plus-02-offset"),
        pytest.param("2026-11-23T20:40:00.250-10:00", STAMP, STAMP_MICROS, id="minus-10-offset"),
        pytest.param("2026-11-24T06:40:00Z", "2026-11-24T06:40:00.000Z", 1_795_502_400_000_000,
                     id="0-fraction-digits"),
        *(
            pytest.param(
                f"2026-11-24T06:40:00.{'123456789'[:n]}Z",
                f"2026-11-24T06:40:00.{'123456789'[:n].ljust(3, '0')[:3]}Z",
                1_795_502_400_000_000 + int("123456789"[:n].ljust(3, "0")[:3]) * 1000,
                id=f"{n}-fraction-digits",
            )
            for n in range(1, 10)
        ),
        pytest.param("2026-11-24t06:40:00.250z", STAMP, STAMP_MICROS, id="lower-case-t-z"),
        pytest.param("2026-11-24 06:40:00.250Z", STAMP, STAMP_MICROS, id="space-separator"),
        pytest.param(" 2026-11-24T06:40:00.250Z\n", STAMP, STAMP_MICROS, id="whitespace"),
        pytest.param(1_795_502_400_250, STAMP, STAMP_MICROS, id="epoch-millis"),
        pytest.param(1_795_502_400, "2026-11-24T06:40:00.000Z", 1_795_502_400_000_000,
                     id="epoch-seconds"),
        pytest.param(1_795_502_400.25, STAMP, STAMP_MICROS, id="epoch-seconds-fraction"),
        pytest.param(1_795_502_400_250.9, STAMP, STAMP_MICROS, id="epoch-millis-fraction"),
    ],
)  # fmt: skip
def test_event_time_forms(stamp: object, cell: str, micros: int) -> None:
    _, cells, got = row(accepted(raw(body(message_timestamp=stamp))))
    assert (cells["message_timestamp"], got) == (cell.encode(), micros)


# --- other accepted variants ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        pytest.param({"user": USER.upper()}, f"example.com#{USER}", id="upper-case-uuid"),
        pytest.param({"user": USER.replace("-", "")}, f"example.com#{USER}", id="uuid-hex-only"),
        pytest.param({"user": "{" + USER + "}"}, f"example.com#{USER}", id="uuid-braces"),
        pytest.param({"user": f"  {USER} "}, f"example.com#{USER}", id="uuid-whitespace"),
        pytest.param({"domain": "Example.COM"}, f"example.com#{USER}", id="upper-case-domain"),
        pytest.param({"domain": " example.com\n"}, f"example.com#{USER}", id="domain-whitespace"),
        pytest.param({"domain": "example.com."}, f"example.com#{USER}", id="domain-trailing-dot"),
        pytest.param({"domain": "xn--bcher-kva.de"}, f"xn--bcher-kva.de#{USER}", id="punycode"),
    ],
)
def test_identifiers_are_normalised_into_one_key(fields: dict[str, Any], key: str) -> None:
    assert row(accepted(raw(body(**fields))))[0] == key


def test_service_ids_are_stripped_and_keep_their_order() -> None:
    services = [" marketing-5", "web_performance_and_analytics-3 ", "essential-1"]
    cells = row(accepted(raw(body(services=services))))[1]
    assert cells["services"] == b'["marketing-5","web_performance_and_analytics-3","essential-1"]'


def test_key_order_and_formatting_do_not_matter() -> None:
    text = (
        '\n {"services":["essential-1"] ,\n"message_timestamp":"2026-11-24T06:40:00.250Z",'
        f'"domain":"example.com","user":"{USER}"}}\r\n'
    )
    assert row(accepted(raw(text))) == row(accepted(raw(body())))


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert row(accepted(raw(b"\xef\xbb\xbf" + body().encode()))) == row(accepted(raw(body())))


# --- deliberate rejections --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "fragment"),
    [
        pytest.param(
            body(message_timestamp="2026-11-24T06:40:00.250"),
            ErrorKind.INVALID_FIELD,
            "needs an offset",
            id="no-offset-its-zone-is-a-guess",
        ),
        pytest.param(
            body(message_timestamp="1795502400250"),
            ErrorKind.INVALID_FIELD,
            "must be a JSON number",
            id="epoch-in-a-string",
        ),
        pytest.param(
            body(message_timestamp="2021-03-05T10:20:30.123Z"),
            ErrorKind.EVENT_TIME_OUT_OF_RANGE,
            "older than the maximum age of 604800s",
            id="older-than-pubsub-retention",
        ),
        pytest.param(
            body(domain="b\u00fccher.de"), ErrorKind.INVALID_FIELD, "xn-- form", id="unicode-domain"
        ),
        pytest.param(
            body(domain="https://example.com"),
            ErrorKind.INVALID_FIELD,
            "domain: String should match pattern",
            id="url-not-domain",
        ),
        pytest.param(
            body(services=["Essential-1"]),
            ErrorKind.INVALID_FIELD,
            "services.0: String should match pattern",
            id="upper-case-service-id",
        ),
        pytest.param(
            body(services=["essential-1", "essential-1"]),
            ErrorKind.INVALID_FIELD,
            "listed twice",
            id="duplicate-service",
        ),
        pytest.param(
            body(consent_string="CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"),
            ErrorKind.UNEXPECTED_FIELD,
            "consent_string: Extra inputs are not permitted",
            id="field-of-a-newer-version",
        ),
        pytest.param(
            body(user=_DROP), ErrorKind.MISSING_FIELD, "user: Field required", id="no-user"
        ),
    ],
)
def test_deliberate_rejections(text: str, kind: ErrorKind, fragment: str) -> None:
    letter = refused(raw(text))
    assert letter.kind is kind
    assert fragment in letter.error


# --- the service catalog ----------------------------------------------------------------

CATALOG = ParseRules(service_catalog=frozenset(SEED_SERVICES))


def test_with_the_seed_catalog_every_seed_service_is_known() -> None:
    event = accepted(raw(body(services=SEED_SERVICES[:24])), CATALOG)
    assert row(event)[0] == f"example.com#{USER}"


def test_an_id_outside_the_catalog_is_its_own_kind_naming_the_id() -> None:
    letter = refused(raw(body(services=["essential-1", "marketing-6", "ads-2"])), CATALOG)
    assert letter.kind is ErrorKind.UNKNOWN_SERVICE
    assert letter.error == (
        "consent.v1: services: unknown service 'marketing-6', 'ads-2' "
        "(not in the service catalog of 25 ids)"
    )


def test_v2_grants_are_checked_against_the_catalog_too() -> None:
    grants = [{"id": "essential-1", "granted": True}, {"id": "marketing-6", "granted": False}]
    letter = refused(raw(body(services=grants, region="eu"), schema="consent.v2"), CATALOG)
    assert letter.kind is ErrorKind.UNKNOWN_SERVICE
    assert "'marketing-6'" in letter.error


def test_a_message_broken_otherwise_is_not_an_unknown_service() -> None:
    # a catalog change could not make it valid: it is dead-lettered for the other problem
    letter = refused(raw(body(user="nope", services=["marketing-6"])), CATALOG)
    assert letter.kind is ErrorKind.INVALID_FIELD
    assert "unknown service 'marketing-6'" in letter.error
