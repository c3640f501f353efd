"""build_pipeline: the ingestion pipeline as a sentence of named stages."""

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from stream.config import IngestConfig
from stream.messages import DeadLetter, Written
from stream.transforms.event_time import AssignEventTime
from stream.transforms.parse import ParseAndValidate
from stream.transforms.rollup import ROWS, TOO_LATE, Rollups


class Source(Protocol):
    """Where raw messages come from, and how they are acknowledged once stored."""

    acks_after_write: bool

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage]."""

    def acknowledge(self) -> beam.PTransform:
        """PCollection[str ack id] -> acknowledged."""


class Sink(Protocol):
    """Where rows and dead letters go."""

    def write_rows(self) -> beam.PTransform:
        """PCollection[ValidEvent] -> outputs `written` (Written) and `rejected` (DeadLetter)."""

    def write_rollups(self) -> beam.PTransform:
        """PCollection[RollupRow] -> outputs with `rejected` (DeadLetter)."""

    def dead_letter(self) -> beam.PTransform:
        """PCollection[DeadLetter] -> PCollection[DeadLetter] once stored."""


class PipelineOutputs(NamedTuple):
    """The PCollections tests (and extensions) can observe, one per branch."""

    written: beam.PCollection
    dead_letters: tuple[beam.PCollection, ...]  # every dead-letter branch, once stored
    acknowledged: tuple[beam.PCollection, ...]
    rollups: beam.PCollection | None  # RollupRow per fired pane (None: --rollups=off)


def _ack_id(stored: Written | DeadLetter) -> Iterator[str]:
    if stored.raw.ack_id is not None:
        yield stored.raw.ack_id


class DeadLetters(beam.PTransform):
    """Publish each branch's failures with the sink's dead-letter transform.

    Applied per branch instead of after a Flatten: Prism executes Flatten in the runner,
    which breaks fusion and would ship every failure (and, downstream, every ack) through
    the runner before it is acknowledged. Per branch, read -> write -> ack stays one stage.
    """

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self._sink = sink

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {name: pcoll | name >> self._sink.dead_letter() for name, pcoll in branches.items()}


class Acknowledge(beam.PTransform):
    """Acknowledge every stored message (row written or dead letter published), per branch."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self._source = source

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {
            name: (
                pcoll
                | f"{name}/AckIds" >> beam.FlatMap(_ack_id)
                | f"{name}/Ack" >> self._source.acknowledge()
            )
            for name, pcoll in branches.items()
        }


def build_pipeline(
    pipeline: beam.Pipeline,
    source: Source,
    sink: Sink,
    config: IngestConfig,
    *,
    before_write: beam.PTransform | None = None,
) -> PipelineOutputs:
    """Read -> parse/validate -> event time -> write rows; failures -> dead letter; then ack.

    Rollups branch off the events: they never hold up a row or its acknowledgement (a
    message is acknowledged once its row is written). Their `too_late` notices are dead
    letters too, but acknowledge nothing: those messages' rows were written.

    `before_write` is an optional extra stage on valid events just before the write (tests
    use it to inject element failures; nothing in production passes it).
    """
    raw = pipeline | "ReadEvents" >> source.read()
    parsed = raw | "ParseAndValidate" >> ParseAndValidate(config.rules)
    events = parsed.valid | "AssignEventTime" >> AssignEventTime()
    to_write = events if before_write is None else events | "BeforeWrite" >> before_write
    writes = to_write | "WriteRows" >> sink.write_rows()
    dead = {"parse": parsed.invalid, "write": writes.rejected} | "DeadLetter" >> DeadLetters(sink)
    acked = {"rows": writes.written, **dead} | "Acknowledge" >> Acknowledge(source)
    rollup_rows, notices = None, {}
    if config.rollups:
        rollups = events | "Rollups" >> Rollups(config.window, config.allowed_lateness)
        rollup_rows = rollups[ROWS]
        refused = rollup_rows | "WriteRollups" >> sink.write_rollups()
        notices = {"too_late": rollups[TOO_LATE], "rollup_write": refused.rejected} | (
            "RollupDeadLetter" >> DeadLetters(sink)
        )
    return PipelineOutputs(
        written=writes.written,
        dead_letters=(*dead.values(), *notices.values()),
        acknowledged=tuple(acked.values()),
        rollups=rollup_rows,
    )
