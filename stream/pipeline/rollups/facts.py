"""What an event contributes to its rollup: one compact, picklable fact, keyed by (kind, key)."""

from collections.abc import Iterator
from typing import Any

from apache_beam.typehints.decorators import no_annotations

from schemas.base import epoch_millis
from schemas.consent import ConsentV1, ConsentV2
from schemas.telemetry import TelemetryV1
from stream.pipeline.messages import ValidEvent

# One compact, picklable observation per event: what crosses the shuffle to the rollups.
# consent:   ("consent", domain, (user, event_ms, granted services))
# telemetry: ("telemetry", device, (event_ms, ((reading, value), ...)))
ConsentFact = tuple[str, int, tuple[str, ...]]
TelemetryFact = tuple[int, tuple[tuple[str, float], ...]]


def observe(event: object) -> tuple[str, str, ConsentFact | TelemetryFact] | None:
    """The rollup observation of a validated event, or None for types without rollups."""
    if isinstance(event, ConsentV1):
        return (
            "consent",
            event.domain,
            (str(event.user), epoch_millis(event.event_time()), tuple(event.services)),
        )
    if isinstance(event, ConsentV2):
        granted = tuple(grant.id for grant in event.services if grant.granted)
        return (
            "consent",
            event.domain,
            (str(event.user), epoch_millis(event.event_time()), granted),
        )
    if isinstance(event, TelemetryV1):
        readings = tuple(sorted((name, float(v)) for name, v in event.readings.items()))
        return ("telemetry", event.device_id, (epoch_millis(event.event_time()), readings))
    return None


# ((kind, key), (fact, message_id, data, attributes, schema)): what crosses the shuffle. The
# message travels with its fact so that a too-late event's dead letter carries its raw bytes.
Keyed = tuple[tuple[str, str], tuple[Any, str, bytes, dict[str, str], str]]


@no_annotations
def keyed_facts(event: ValidEvent) -> Iterator[Keyed]:
    """The event's fact under its rollup key (nothing for types without rollups)."""
    observed = observe(event.event)
    if observed is not None:
        kind, key, fact = observed
        raw = event.raw
        yield (kind, key), (fact, raw.message_id, raw.data, raw.attributes, event.event.schema_name)
