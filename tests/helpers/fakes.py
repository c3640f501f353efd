"""A TestStream source and a collecting sink, passed into build_pipeline (no patching)."""

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.test_stream import TestStream
from apache_beam.typehints.decorators import no_annotations

from stream.pipeline.io.no_acks import no_acknowledgement
from stream.pipeline.messages import DeadLetter, ErrorKind, Stage, ValidEvent, Written


class TestStreamSource:
    """Feeds a prepared TestStream; nothing to acknowledge."""

    __test__ = False

    def __init__(self, stream: TestStream) -> None:
        self._stream = stream

    def read(self) -> beam.PTransform:
        return self._stream

    def acknowledge(self) -> beam.PTransform:
        return no_acknowledgement()


class _CollectFn(beam.DoFn):
    """Every event becomes a Written (row keys only), except those `reject` names."""

    def __init__(self, reject: frozenset[str]) -> None:
        self._reject = reject

    @no_annotations
    def process(self, event: ValidEvent) -> Iterator[Written | TaggedOutput]:
        key = event.event.row_key()
        if key in self._reject:
            yield TaggedOutput(
                "rejected",
                DeadLetter(event.raw, ErrorKind.WRITE_REJECTED, "rejected by test", Stage.WRITE),
            )
        else:
            yield Written(
                table_id=event.event.table.group,
                row_key=key,
                timestamp_micros=event.event.timestamp_micros(),
                raw=event.raw,
            )


class CollectingSink:
    """Stores nothing: its outputs are the pipeline's outputs, for assert_that."""

    def __init__(self, reject: frozenset[str] = frozenset()) -> None:
        self._reject = reject

    def write_rows(self) -> beam.PTransform:
        return beam.ParDo(_CollectFn(self._reject)).with_outputs("rejected", main="written")

    def write_rollups(self) -> beam.PTransform:
        return beam.Map(lambda row: row).with_outputs("rejected", main="written")

    def dead_letter(self) -> beam.PTransform:
        return beam.Map(lambda letter: letter)
