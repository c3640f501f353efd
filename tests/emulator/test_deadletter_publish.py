"""Dead letters reach the topic whatever their original attributes are called.

The Pub/Sub client's batching `publish(topic, data, **attributes)` takes attributes as
keyword arguments: an original attribute named `timeout`, `retry`, `ordering_key` or `data`
was taken for an option (a poison message that failed its bundle on every retry).
"""

import apache_beam as beam
import pytest

from loadgen.readback import pull_letters
from stream.pipeline.io.deadletter_topic import PublishDeadLettersFn
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage
from tests.helpers.resources import TestResources

pytestmark = [pytest.mark.emulator]

CLASHING = {"timeout": "5", "retry": "no", "ordering_key": "k", "data": "d", "topic": "t"}


def test_originals_with_clashing_attribute_names_are_dead_lettered(
    resources: TestResources,
) -> None:
    letters = [
        DeadLetter(
            RawMessage(b"not json %d" % i, dict(CLASHING), message_id=f"m-{i}"),
            ErrorKind.INVALID_JSON,
            "consent.v1: <message>: Invalid JSON",
            Stage.PARSE,
            "consent.v1",
        )
        for i in range(3)
    ]
    with beam.Pipeline(runner="BundleBasedDirectRunner") as p:
        _ = (
            p
            | beam.Create(letters)
            | beam.ParDo(PublishDeadLettersFn(resources.dead_letter_topic, retry_seconds=30))
        )
    stored = pull_letters(resources.dead_letter_subscription, expected=3, timeout=30)
    assert sorted(letter.data for letter in stored) == [b"not json 0", b"not json 1", b"not json 2"]
    for letter in stored:
        assert {k: letter.attributes[k] for k in CLASHING} == CLASHING
        assert letter.attributes["deadletter_kind"] == "invalid_json"
