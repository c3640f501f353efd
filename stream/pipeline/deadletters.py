"""DeadLetters: each failure branch goes to the sink's dead-letter transform, per branch.

Per branch, not after a Flatten: read -> write -> ack stays one fused stage (stream/DESIGN.md,
"One fused stage"). What a letter is: stream/pipeline/letters.py; where it is published:
the sink (stream/pipeline/io/deadletter_topic.py in production).
"""

from collections.abc import Callable

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations


class DeadLetters(beam.PTransform):
    """Publish each branch's failures with the sink's dead-letter transform."""

    def __init__(self, publish: Callable[[], beam.PTransform]) -> None:
        """`publish`: the sink's transform, PCollection[DeadLetter] -> the letters once stored."""
        super().__init__()
        self._publish = publish

    @no_annotations  # Beam only understands PCollection hints, not dicts of them
    def expand(self, branches: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        return {name: pcoll | name >> self._publish() for name, pcoll in branches.items()}
