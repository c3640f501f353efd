"""AssignEventTime: each valid event's element timestamp becomes its own event time."""

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline.messages import ValidEvent


@no_annotations  # the element type stays ValidEvent; only its timestamp changes
def _with_event_time(event: ValidEvent) -> TimestampedValue:
    # Millisecond precision, the same value the cells get: windows and rows agree.
    return TimestampedValue(event, Timestamp(micros=event.event.timestamp_micros()))


class AssignEventTime(beam.PTransform):
    """Re-timestamp events from the schema's event-time field (skew was checked in parsing).

    Raw rows stay in the global window: nothing downstream of this on the row path waits
    for the watermark, so a backlog or a slow pipeline can never make a row "late".
    """

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "FromEventField" >> beam.Map(_with_event_time)
