"""build_pipeline: the ingestion pipeline as a sentence of named stages."""

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import apache_beam as beam

from stream.config import IngestConfig
from stream.messages import DeadLetter, Written
from stream.transforms.event_time import AssignEventTime
from stream.transforms.parse import ParseAndValidate


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

    def dead_letter(self) -> beam.PTransform:
        """PCollection[DeadLetter] -> PCollection[DeadLetter] once stored."""


class PipelineOutputs(NamedTuple):
    """The PCollections tests (and extensions) can observe."""

    written: beam.PCollection
    dead_letters: beam.PCollection
    acknowledged: beam.PCollection


def _ack_id(stored: Written | DeadLetter) -> Iterator[str]:
    if stored.raw.ack_id is not None:
        yield stored.raw.ack_id


def build_pipeline(
    pipeline: beam.Pipeline,
    source: Source,
    sink: Sink,
    config: IngestConfig,
    *,
    before_write: beam.PTransform | None = None,
) -> PipelineOutputs:
    """Read -> parse/validate -> event time -> write rows; failures -> dead letter; then ack.

    `before_write` is an optional extra stage on valid events just before the write (tests
    use it to inject element failures; nothing in production passes it).
    """
    raw = pipeline | "ReadEvents" >> source.read()
    parsed = raw | "ParseAndValidate" >> ParseAndValidate(config.rules)
    events = parsed.valid | "AssignEventTime" >> AssignEventTime()
    if before_write is not None:
        events = events | "BeforeWrite" >> before_write
    writes = events | "WriteRows" >> sink.write_rows()
    dead = (
        (parsed.invalid, writes.rejected)
        | "CollectFailures" >> beam.Flatten()
        | "DeadLetter" >> sink.dead_letter()
    )
    acked = (
        (writes.written, dead)
        | "CollectStored" >> beam.Flatten()
        | "AckIds" >> beam.FlatMap(_ack_id)
        | "Acknowledge" >> source.acknowledge()
    )
    return PipelineOutputs(written=writes.written, dead_letters=dead, acknowledged=acked)
