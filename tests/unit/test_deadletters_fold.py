"""Error texts folded so similar errors group: the pipeline's real texts, folded by hand."""

import pytest

from stream.deadletters.fold import fold_error

# Real texts: from tests/unit/test_validate.py, tests/unit/test_real_producers.py and the
# write stage (stream/pipeline/io/bigtable.py), as the pipeline writes them.
CASES = [
    (
        "consent.v1: services: unknown service 'marketing-6' (not in the service catalog of 25 "
        "ids)",
        "consent.v1: services: unknown service '<id>' (not in the service catalog of <n> ids)",
    ),
    (
        "consent.v1: services: unknown service 'marketing-6', 'ads-2' (not in the service "
        "catalog of 25 ids)",
        "consent.v1: services: unknown service '<id>' (not in the service catalog of <n> ids)",
    ),
    (
        "consent.v1: services: Value error, service 'essential-1' is listed twice",
        "consent.v1: services: Value error, service '<id>' is listed twice",
    ),
    (
        "consent.v1: <message>: Invalid JSON: EOF while parsing a value at line 1 column 9",
        "consent.v1: <message>: Invalid JSON: EOF while parsing a value at line <n> column <n>",
    ),
    (
        "consent.v1: <message>: event time 2026-11-17T06:40:52.999Z is older than the maximum "
        "age of 604800s",
        "consent.v1: <message>: event time <time> is older than the maximum age of 604800s",
    ),
    (
        "consent.v1: <message>: event time 2026-11-24T06:45:53.001Z is more than 300s in the "
        "future",
        "consent.v1: <message>: event time <time> is more than 300s in the future",
    ),
    (
        "the message body is 11 bytes; the limit is 10",
        "the message body is <n> bytes; the limit is <n>",
    ),
    (
        "row key is 5014 bytes; Bigtable allows at most 4096",
        "row key is <n> bytes; Bigtable allows at most <n>",
    ),
    (
        "the message body is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte",
        "the message body is not UTF-8: '<id>' codec can't decode byte <hex> in position <n>: "
        "invalid start byte",
    ),
    (
        "unknown schema 'consent.v9'; known: consent.v1, consent.v2, telemetry.v1",
        "unknown schema '<id>'; known: consent.v1, consent.v2, telemetry.v1",
    ),
    (
        "consent.v1: user: Input should be a valid UUID, invalid character: found `n` at 0",
        "consent.v1: user: Input should be a valid UUID, invalid character: found `<id>` at <n>",
    ),
    (
        "Bigtable rejected row 'example.com#0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11': 400 bad",
        "Bigtable rejected row '<id>': <n> bad",
    ),
    ("consent.v1: domain: Field required", "consent.v1: domain: Field required"),
    ("the message body is empty", "the message body is empty"),
]


@pytest.mark.parametrize(("text", "folded"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_real_error_texts_fold(text: str, folded: str) -> None:
    assert fold_error(text) == folded


def test_errors_about_different_ids_fold_to_one_text() -> None:
    texts = [
        f"consent.v1: services: unknown service '{service}' (not in the service catalog of 25 ids)"
        for service in ("marketing-6", "functional-6", "web_performance_and_analytics-6")
    ]
    assert len({fold_error(text) for text in texts}) == 1


def test_a_bare_uuid_and_a_long_hex_id_fold() -> None:
    assert fold_error("user 0B0D8F5E6A4F4E8E9A572A9D8F0B8A11 refused") == "user <uuid> refused"
    assert fold_error("digest 9f86d081884c7d65 differs") == "digest <hex> differs"
