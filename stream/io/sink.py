"""The production sink: rows to Bigtable, dead letters to a Pub/Sub topic."""

import apache_beam as beam

from stream.config import BigtableTarget
from stream.io.bigtable import REJECTED, WriteRollupsFn, WriteRows
from stream.io.pubsub import PublishDeadLettersFn


class BigtableSink:
    """Writes rows with WriteRows and publishes dead letters to `dead_letter_topic`."""

    def __init__(self, target: BigtableTarget, dead_letter_topic: str) -> None:
        self._target = target
        self._topic = dead_letter_topic

    def write_rows(self) -> beam.PTransform:
        """PCollection[ValidEvent] -> outputs `written` (Written) and `rejected` (DeadLetter)."""
        return WriteRows(self._target)

    def write_rollups(self) -> beam.PTransform:
        """PCollection[RollupRow] -> outputs `rejected` (DeadLetter) for refused rows."""
        return beam.ParDo(WriteRollupsFn(self._target)).with_outputs(REJECTED, main="written")

    def dead_letter(self) -> beam.PTransform:
        """PCollection[DeadLetter] -> the same letters, once Pub/Sub has stored them."""
        return beam.ParDo(PublishDeadLettersFn(self._topic))
