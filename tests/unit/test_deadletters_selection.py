"""Selecting letters, building what a redrive sends, and the summary's counts (no Pub/Sub)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from stream.deadletters.letters import Letter
from stream.deadletters.redrive import CannotRedriveError, RedriveReport, outgoing
from stream.deadletters.selection import Selection
from stream.deadletters.summary import Summary, render
from stream.pipeline.letters import dead_letter_message
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
UNKNOWN = "consent.v1: services: unknown service '{}' (not in the service catalog of 25 ids)"


def make(
    kind: ErrorKind = ErrorKind.UNKNOWN_SERVICE,
    error: str = UNKNOWN.format("marketing-6"),
    stage: Stage = Stage.PARSE,
    schema: str = "consent.v1",
    attributes: dict[str, str] | None = None,
    minute: int = 0,
    letter_id: str = "1",
    data: bytes = b"{}",
    original: str | None = None,
) -> Letter:
    """A letter exactly as the pipeline publishes it (dead_letter_message)."""
    raw = RawMessage(
        data=data,
        attributes={"schema": "consent.v1"} if attributes is None else attributes,
        message_id=f"orig-{original or letter_id}",
        publish_time=T0,
    )
    body, attrs = dead_letter_message(
        DeadLetter(raw=raw, kind=kind, error=error, stage=stage, schema=schema)
    )
    return Letter(letter_id, f"ack-{letter_id}", T0 + timedelta(minutes=minute), body, attrs)


def test_an_empty_selection_matches_everything() -> None:
    assert Selection().matches(make())
    assert Selection().matches(make(kind=ErrorKind.WRITE_REJECTED, stage=Stage.WRITE))


@pytest.mark.parametrize(
    ("selection", "matches"),
    [
        (Selection(kinds=frozenset({"unknown_service"})), True),
        (Selection(kinds=frozenset({"missing_field", "unknown_service"})), True),
        (Selection(kinds=frozenset({"missing_field"})), False),
        (Selection(schemas=frozenset({"consent.v1"})), True),
        (Selection(schemas=frozenset({"consent.v2"})), False),
        (Selection(stages=frozenset({"parse"})), True),
        (Selection(stages=frozenset({"write"})), False),
        (Selection(error_contains="'marketing-6'"), True),
        (Selection(error_contains="'marketing-7'"), False),
        (Selection(published_after=T0 + timedelta(minutes=5)), True),  # inclusive
        (Selection(published_after=T0 + timedelta(minutes=6)), False),
        (Selection(published_before=T0 + timedelta(minutes=6)), True),
        (Selection(published_before=T0 + timedelta(minutes=5)), False),  # exclusive
        (Selection(kinds=frozenset({"unknown_service"}), stages=frozenset({"write"})), False),
    ],
)
def test_every_criterion_must_match(selection: Selection, matches: bool) -> None:
    assert selection.matches(make(minute=5)) is matches


def test_too_late_notices_are_redriven_only_by_name() -> None:
    notice = make(kind=ErrorKind.TOO_LATE, stage=Stage.ROLLUP, error="its row was written")
    assert Selection().matches(notice)
    assert not Selection().redrivable(notice)
    assert Selection(kinds=frozenset({"too_late"})).redrivable(notice)
    assert Selection().redrivable(make())


def test_outgoing_is_the_original_with_the_counter_one_higher() -> None:
    letter = make(attributes={"schema": "consent.v1", "loadgen_id": "r:1"}, data=b'{"a": 1}')
    message = outgoing(letter)
    assert (message.data, message.attributes, message.round) == (
        b'{"a": 1}',
        {"schema": "consent.v1", "loadgen_id": "r:1", "redrive_count": "1"},
        1,
    )
    again = outgoing(make(attributes={"schema": "consent.v1", "redrive_count": "2"}))
    assert (again.attributes["redrive_count"], again.round) == ("3", 3)


def test_outgoing_of_an_envelope_letter_is_unwrapped() -> None:
    originals = {f"a{i:02d}": str(i) for i in range(98)}
    letter = make(attributes=originals, data=b"\x00raw bytes\xff")
    assert letter.attributes["deadletter_envelope"] == "json"
    message = outgoing(letter)
    assert message.data == b"\x00raw bytes\xff"
    assert message.attributes == {**originals, "redrive_count": "1"}


def test_an_original_with_100_attributes_has_no_room_for_the_counter() -> None:
    originals = {f"a{i:02d}": str(i) for i in range(100)}
    with pytest.raises(CannotRedriveError, match="100 original attributes leave no room"):
        outgoing(make(attributes=originals))
    # with its counter among the 100 already, it is replaced: still 100
    counted = {f"a{i:02d}": str(i) for i in range(99)} | {"redrive_count": "1"}
    assert len(outgoing(make(attributes=counted)).attributes) == 100


def test_an_unreadable_envelope_cannot_be_redriven() -> None:
    letter = Letter("9", "ack", T0, b"{broken", {"deadletter_envelope": "json"})
    with pytest.raises(CannotRedriveError, match="not a dead-letter envelope"):
        outgoing(letter)
    assert letter.redrives() == 0


def test_summary_counts_groups_errors_and_redrive_counts() -> None:
    summary = Summary(subscription="projects/p/subscriptions/dlq")
    letters = [
        make(letter_id="1", minute=3, error=UNKNOWN.format("marketing-6")),
        make(letter_id="2", minute=1, error=UNKNOWN.format("ads-2")),
        make(
            letter_id="3",
            minute=2,
            error=UNKNOWN.format("ads-2"),
            attributes={"schema": "consent.v1", "redrive_count": "2"},
        ),
        make(
            kind=ErrorKind.MISSING_FIELD,
            error="consent.v1: domain: Field required",
            letter_id="4",
            minute=7,
        ),
        make(
            kind=ErrorKind.UNKNOWN_SCHEMA,
            schema="",
            error="unknown schema 'consent.v0'; known: consent.v1, consent.v2, telemetry.v1",
            letter_id="5",
        ),
    ]
    for letter in letters:
        summary.add(letter)
    summary.complete = True
    data = summary.to_json()
    assert data["letters"] == 5
    assert data["kinds"] == {"unknown_service": 3, "missing_field": 1, "unknown_schema": 1}
    assert data["groups"][0] == {
        "kind": "unknown_service",
        "stage": "parse",
        "schema": "consent.v1",
        "count": 3,
        "first_publish_time": "2026-11-24T06:01:00.000Z",
        "last_publish_time": "2026-11-24T06:03:00.000Z",
        "sample_message_id": "1",
    }
    assert data["errors"][0] == {
        "kind": "unknown_service",
        "error": "consent.v1: services: unknown service '<id>' (not in the service catalog of "
        "<n> ids)",
        "count": 3,
        "sample_message_id": "1",
    }
    assert data["redrive_counts"] == {"0": 4, "2": 1}
    json.dumps(data)  # serialisable as it is
    text = render(summary)
    assert text.splitlines()[0] == (
        "5 dead letters in projects/p/subscriptions/dlq (read in 0.0 s; none acknowledged)"
    )
    assert "unknown_schema   parse  -" in text  # an empty schema is shown as -
    assert text.splitlines()[-1] == "redriven before: 1 redriven 2x"


def test_redrive_report_line() -> None:
    report = RedriveReport(
        read=10, matched=8, sent=6, exhausted=2, seconds=6.0, sending_seconds=2.0, ended="all read"
    )
    assert report.line(dry_run=False) == (
        "redrive: read=10 matched=8 sent=6 failed=0 exhausted=2 dropped=0 refused=0 "
        "returned=0 left=4 in 6.0s (3 letters/s; all read)"
    )
    assert "(0 letters/s" in RedriveReport(read=3, seconds=4.0).line(dry_run=False)
    assert report.ok
    assert not RedriveReport(failed=1).ok
    assert not RedriveReport(refused=1).ok


def test_a_letter_published_twice_is_counted_once() -> None:
    summary = Summary(subscription="projects/p/subscriptions/dlq")
    summary.add(make(letter_id="1", original="a"))
    summary.add(make(letter_id="2", original="a"))  # the same original, published again
    summary.add(make(letter_id="3", original="b"))
    summary.add(make(letter_id="4", original="b", kind=ErrorKind.WRITE_REJECTED))  # another kind
    assert (summary.letters, summary.copies) == (3, 1)
    assert summary.kinds() == {"unknown_service": 2, "write_rejected": 1}
    assert summary.to_json()["copies"] == 1
    assert "and 1 copies counted once" in render(summary).splitlines()[0]
