"""An exported line: the letter as stored plus its reason, enough to rebuild the original."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from stream.deadletters.export import ExportResult, line
from stream.deadletters.letters import Letter
from stream.pipeline.letters import dead_letter_message, original_message
from stream.pipeline.messages import DeadLetter, ErrorKind, RawMessage, Stage

PUBLISHED = datetime(2026, 11, 24, 6, 40, 53, 123456, tzinfo=UTC)


def test_an_exported_line_holds_the_letter_and_rebuilds_the_original() -> None:
    originals = {"schema": "consent.v1", "redrive_count": "1"} | {f"a{i}": "v" for i in range(97)}
    raw = RawMessage(b"\xffraw", originals, message_id="orig-7", publish_time=PUBLISHED)
    data, attributes = dead_letter_message(
        DeadLetter(raw, ErrorKind.NOT_UTF8, "not UTF-8", Stage.PARSE, "consent.v1")
    )
    letter = Letter("99", "ack", datetime(2026, 11, 24, 7, 0, tzinfo=UTC), data, attributes)
    exported = json.loads(json.dumps(line(letter)))
    assert {k: v for k, v in exported.items() if k not in ("attributes", "data_base64")} == {
        "message_id": "99",
        "publish_time": "2026-11-24T07:00:00.000Z",
        "kind": "not_utf8",
        "error": "not UTF-8",
        "stage": "parse",
        "schema": "consent.v1",
        "original_message_id": "orig-7",
        "original_publish_time": "2026-11-24T06:40:53.123Z",
        "redrive_count": 1,  # from inside the envelope
    }
    assert exported["attributes"] == attributes
    stored = base64.b64decode(exported["data_base64"])
    assert stored == data
    assert original_message(stored, exported["attributes"]) == (b"\xffraw", originals)


def test_the_closing_line() -> None:
    result = ExportResult(written=5, acknowledged=5, complete=True, seconds=4.2)
    assert result.line(Path("out.jsonl"), ack=True) == (
        "export: written=5 acknowledged=5 to out.jsonl in 4.2s (all read)"
    )
    partial = ExportResult(written=2, seconds=60.0)
    assert partial.line(Path("out.jsonl"), ack=False) == (
        "export: written=2 acknowledged=0 (no --ack) to out.jsonl in 60.0s (stopped at --timeout)"
    )
