"""PreAggregate: a bundle's events grouped by rollup key and window before the shuffle.

Prism does not lift combiners for triggered aggregations (stream/DESIGN.md), and a keyed
state read per event would be a runner round trip per event. Grouped here, what crosses the
shuffle and what touches state grows with the keys and windows of a bundle, not its events.
"""

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from stream.pipeline.messages import ValidEvent
from stream.pipeline.rollups.facts import Member, member
from stream.pipeline.rollups.windows import MS, Windowing

# ((kind, key), {window start micros: [members]}): one element per key and bundle.
Grouped = tuple[tuple[str, str], dict[int, list[Member]]]
MAX_BUFFERED = 20_000  # members held before an early flush (bounds memory on large bundles)


class PreAggregate(beam.DoFn):
    """Buffers the bundle's facts per (kind, key) and window; emits one element per key."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._windowing = Windowing.of(window, lateness)
        self._buffer: dict[tuple[str, str], dict[int, list[Member]]] = {}
        self._buffered = 0

    def start_bundle(self) -> None:
        self._buffer = defaultdict(lambda: defaultdict(list))
        self._buffered = 0

    @no_annotations
    def process(self, event: ValidEvent) -> Iterator[WindowedValue]:
        observed = member(event)
        if observed is None:
            return
        kind, key, item = observed
        self._buffer[(kind, key)][self._windowing.start(item.event_ms)].append(item)
        self._buffered += 1
        if self._buffered >= MAX_BUFFERED:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        buffer, self._buffer = self._buffer, defaultdict(lambda: defaultdict(list))
        self._buffered = 0
        for rollup_key, windows in buffer.items():
            earliest = min(m.event_ms for members in windows.values() for m in members)
            grouped: Grouped = (rollup_key, dict(windows))
            yield WindowedValue(grouped, Timestamp(micros=earliest * MS), [GlobalWindow()])
