"""build_pipeline: the ingestion pipeline as a sentence of named stages."""

from typing import NamedTuple, Protocol

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from stream.pipeline.acknowledge import Acknowledge
from stream.pipeline.config import WORKER_PROCESS_HINTS, IngestConfig, RollupWorker
from stream.pipeline.deadletters import DeadLetters
from stream.pipeline.event_time import AssignEventTime
from stream.pipeline.parse import ParseAndValidate
from stream.pipeline.rollups.transform import Rollups


class Source(Protocol):
    """Where raw messages come from, and how they are acknowledged once stored."""

    def read(self) -> beam.PTransform:
        """PBegin -> PCollection[RawMessage]."""

    def acknowledge(self) -> beam.PTransform:
        """PCollection[str ack id] -> acknowledged."""


class Sink(Protocol):
    """Where rows and dead letters go."""

    def write_rows(self) -> beam.PTransform:
        """PCollection[ValidEvent] -> Writes (written: Written, rejected: DeadLetter)."""

    def write_rollups(self) -> beam.PTransform:
        """PCollection[RollupRow] -> Writes (written: nothing, rejected: DeadLetter)."""

    def dead_letter(self) -> beam.PTransform:
        """PCollection[DeadLetter] -> PCollection[DeadLetter] once stored."""


class PipelineOutputs(NamedTuple):
    """The PCollections tests (and extensions) can observe, one per branch."""

    written: beam.PCollection
    dead_letters: tuple[beam.PCollection, ...]  # every dead-letter branch, once stored
    acknowledged: tuple[beam.PCollection, ...]
    rollups: beam.PCollection | None  # RollupRow per fired pane (None: --rollups=off)


class _Ingested(NamedTuple):
    events: beam.PCollection
    written: beam.PCollection
    dead: dict[str, beam.PCollection]
    acked: dict[str, beam.PCollection]


def _ingest(
    root: beam.Pipeline | beam.pvalue.PBegin, source: Source, sink: Sink, config: IngestConfig
) -> _Ingested:
    """Read -> parse/validate -> event time -> write rows; failures -> dead letter; then ack."""
    raw = root | "ReadEvents" >> source.read()
    parsed = raw | "ParseAndValidate" >> ParseAndValidate(config.rules)
    events = parsed.valid | "AssignEventTime" >> AssignEventTime()
    writes = events | "WriteRows" >> sink.write_rows()
    dead = {"parse": parsed.invalid, "write": writes.rejected} | "DeadLetter" >> DeadLetters(
        sink.dead_letter
    )
    acked = {"rows": writes.written, **dead} | "Acknowledge" >> Acknowledge(source.acknowledge)
    return _Ingested(events, writes.written, dead, acked)


class _SecondProcess(beam.PTransform):
    """The same sentence in the worker process (Prism): a second GIL pulls, writes and acks."""

    def __init__(self, source: Source, sink: Sink, config: IngestConfig) -> None:
        super().__init__()
        self._source, self._sink, self._config = source, sink, config

    @no_annotations
    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return _ingest(pbegin, self._source, self._sink, self._config).events


def build_pipeline(
    pipeline: beam.Pipeline,
    source: Source,
    sink: Sink,
    config: IngestConfig,
    second: Source | None = None,
) -> PipelineOutputs:
    """Read -> parse/validate -> event time -> write rows; failures -> dead letter; then ack.

    Rollups branch off the events: they never hold up a row or its acknowledgement (a
    message is acknowledged once its row is written). Their `too_late` notices are dead
    letters too, but acknowledge nothing: those messages' rows were written. With `second`
    (Prism, --ingest_processes=2), the same sentence runs from it in the worker process
    too, and both feed the rollups.
    """
    first = _ingest(pipeline, source, sink, config)
    events: tuple[beam.PCollection, ...] = (first.events,)
    if second is not None:
        events += (
            pipeline
            | "SecondProcess"
            >> _SecondProcess(second, sink, config).with_resource_hints(**WORKER_PROCESS_HINTS),
        )
    rollup_rows, notices = None, {}
    if config.rollups:
        rollups = (events[0] if len(events) == 1 else events) | "Rollups" >> Rollups(
            config.window,
            config.allowed_lateness,
            own_worker=config.rollup_worker is RollupWorker.PROCESS,
        )
        rollup_rows = rollups.rows
        refused = rollup_rows | "WriteRollups" >> sink.write_rollups()
        notices = {"too_late": rollups.too_late, "rollup_write": refused.rejected} | (
            "RollupDeadLetter" >> DeadLetters(sink.dead_letter)
        )
    return PipelineOutputs(
        written=first.written,
        dead_letters=(*first.dead.values(), *notices.values()),
        acknowledged=tuple(first.acked.values()),
        rollups=rollup_rows,
    )
