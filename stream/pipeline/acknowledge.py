"""Acknowledge: a message is acknowledged only once its row is written or its letter stored.

Each stored branch (rows written, dead letters published) hands the ack ids its messages
carry to the source's own acknowledge transform: the source knows how (the pull source:
stream/pipeline/io/pubsub_ack.py), or that there is nothing to do (files, Beam's native read).
"""

from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from stream.pipeline.messages import DeadLetter, Written


def ack_id_of(stored: Written | DeadLetter) -> Iterator[str]:
    """The ack id a stored message carries, if its source acknowledges after the write."""
    if stored.raw.ack_id is not None:
        yield stored.raw.ack_id


class Acknowledge(beam.PTransform):
    """Acknowledge every stored message (row written or dead letter published), per branch.

    Per branch rather than after a Flatten: Prism runs a Flatten in the runner, which would
    break the read -> write -> ack fusion (stream/DESIGN.md, "One fused stage").
    """

    def __init__(self, acknowledge: Callable[[], beam.PTransform]) -> None:
        """`acknowledge`: the source's transform, PCollection[ack id] -> acknowledged."""
        super().__init__()
        self._acknowledge = acknowledge

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {
            name: (
                pcoll
                | f"{name}/AckIds" >> beam.FlatMap(ack_id_of)
                | f"{name}/Ack" >> self._acknowledge()
            )
            for name, pcoll in branches.items()
        }
