"""A batch source for backfills: JSON-lines files, one message body per line.

Each line becomes a RawMessage with the configured schema attribute and its provenance
(`source_file`, `source_line`, `source_mtime`, message id `<file>:<line>`), so dead letters
say where a bad line came from. Replaying the same files rewrites the same cells: rows are
idempotent.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.typehints.decorators import no_annotations

from schemas.base import format_rfc3339_millis
from stream.pipeline.io.no_acks import no_acknowledgement
from stream.pipeline.messages import SOURCE_MTIME_ATTRIBUTE, RawMessage


class _ReadLines(beam.DoFn):
    def __init__(self, schema_attribute: str, schema: str) -> None:
        self._attribute = schema_attribute
        self._schema = schema

    @no_annotations
    def process(self, readable: fileio.ReadableFile) -> Iterator[RawMessage]:
        path = readable.metadata.path
        provenance = {self._attribute: self._schema, "source_file": path}
        mtime = readable.metadata.last_updated_in_seconds
        if mtime:  # 0.0: the filesystem did not say
            modified = datetime.fromtimestamp(mtime, tz=UTC)
            provenance[SOURCE_MTIME_ATTRIBUTE] = format_rfc3339_millis(modified)
        with readable.open() as lines:
            for number, line in enumerate(lines, start=1):
                data = line.rstrip(b"\r\n")
                if not data.strip():
                    continue  # blank lines are not messages
                yield RawMessage(
                    data=data,
                    attributes={**provenance, "source_line": str(number)},
                    message_id=f"{path}:{number}",
                )


class ReadLines(beam.PTransform):
    """PBegin -> PCollection[RawMessage], one per non-blank line of the matched files."""

    def __init__(self, pattern: str, schema_attribute: str, schema: str) -> None:
        super().__init__()
        self._pattern = pattern
        self._attribute = schema_attribute
        self._schema = schema

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern, empty_match_treatment="DISALLOW")
            | "Open" >> fileio.ReadMatches()
            | "Lines" >> beam.ParDo(_ReadLines(self._attribute, self._schema))
        )


class FileSource:
    """Reads `pattern` (any Beam filesystem: local paths, gs://...); nothing to acknowledge."""

    def __init__(self, pattern: str, schema_attribute: str, schema: str) -> None:
        self._pattern = pattern
        self._attribute = schema_attribute
        self._schema = schema

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage], one per non-blank line."""
        return ReadLines(self._pattern, self._attribute, self._schema)

    def acknowledge(self) -> beam.PTransform:
        """Nothing to acknowledge in a file."""
        return no_acknowledgement()
