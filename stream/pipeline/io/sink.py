"""The production sink: rows to Bigtable, dead letters to a Pub/Sub topic."""

import apache_beam as beam

from stream.pipeline.config import BigtableTarget
from stream.pipeline.io.bigtable import WriteRollups, WriteRows
from stream.pipeline.io.deadletter_topic import PublishDeadLettersFn


class BigtableSink:
    """Writes rows with WriteRows and publishes dead letters to `dead_letter_topic`."""

    def __init__(self, target: BigtableTarget, dead_letter_topic: str) -> None:
        self._target = target
        self._topic = dead_letter_topic

    def write_rows(self) -> beam.PTransform:
        """PCollection[ValidEvent] -> Writes(written: Written, rejected: DeadLetter)."""
        return WriteRows(self._target)

    def write_rollups(self) -> beam.PTransform:
        """PCollection[RollupRow] -> Writes(rejected: DeadLetter for rows refused for good)."""
        return WriteRollups(self._target)

    def dead_letter(self) -> beam.PTransform:
        """PCollection[DeadLetter] -> the same letters, once Pub/Sub has stored them."""
        retry = self._target.retry.total_seconds()
        return beam.ParDo(PublishDeadLettersFn(self._topic, retry_seconds=retry))
