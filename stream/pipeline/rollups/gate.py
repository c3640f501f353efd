"""Gate: per rollup key, the windows it has closed; their events come out `too_late`.

Keyed by (kind, domain or device), it receives a bundle's events of the key grouped by
window (PreAggregate) and passes each window's events on to its own accumulation, keyed by
(kind, key, window), unless the key has already closed that window. The gate keeps the
closing times of the windows it passed and one event-time timer at the earliest: a pending
timer holds the gate's output watermark, so a window's accumulation cannot close while the
gate may still pass events to it; when the timer fires, the window is closed for the key.

A window the key never held passes even if the watermark is past its closing time (a DoFn
cannot see the watermark): its accumulation opens, emits and closes at once, so its row holds
exactly the events that arrived for it. Nothing is dropped silently.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import userstate
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.rollups.facts import Member
from stream.pipeline.rollups.preaggregate import Grouped
from stream.pipeline.rollups.windows import Windowing

TOO_LATE = "too_late"
WindowKey = tuple[str, str, int]  # (kind, domain or device, window start micros)
# What a window's accumulation receives.
WindowMembers = tuple[WindowKey, list[Member]]

# (closed up to, pending closing times), micros: a few dozen integers per key at most.
GATE = userstate.ReadModifyWriteStateSpec("gate", PickleCoder())
TIMER = userstate.TimerSpec("close", userstate.TimeDomain.WATERMARK)
_GATE = beam.DoFn.StateParam(GATE)
_TIMER = beam.DoFn.TimerParam(TIMER)


class Gate(beam.DoFn):
    """Main output: WindowMembers to accumulate; tagged `too_late`: (kind, key, start, member)."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._windowing = Windowing.of(window, lateness)
        self._too_late = metrics.counter(metrics.ROLLUP_TOO_LATE)
        # key -> (closed up to, pending): read once per key and bundle (stream/DESIGN.md).
        self._seen: dict[tuple[str, str], tuple[int, set[int]]] = {}

    def start_bundle(self) -> None:
        self._seen = {}

    @no_annotations
    def process(
        self, element: Grouped, stored: Any = _GATE, timer: Any = _TIMER
    ) -> Iterator[WindowMembers | TaggedOutput]:
        (kind, key), windows = element
        if (kind, key) not in self._seen:
            closed, pending = stored.read() or (0, frozenset())
            self._seen[(kind, key)] = (closed, set(pending))
        closed, pending = self._seen[(kind, key)]
        earliest = min(pending, default=None)
        opened = False
        for start, members in sorted(windows.items()):
            closing = self._windowing.expiry(start)
            if closing <= closed:
                self._too_late.inc(len(members))
                for item in members:
                    yield TaggedOutput(TOO_LATE, (kind, key, start, item))
                continue
            opened = opened or closing not in pending
            pending.add(closing)
            yield (kind, key, start), members
        if pending and (earliest is None or min(pending) < earliest):
            timer.set(Timestamp(micros=min(pending)))  # holds the watermark below it
        if opened:  # a state write is a runner round trip: only when something changed
            stored.write((closed, frozenset(pending)))

    @userstate.on_timer(TIMER)
    def on_close(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired: Timestamp = beam.DoFn.TimestampParam,
        stored: Any = _GATE,
        timer: Any = _TIMER,
    ) -> None:
        self._seen.pop(tuple(key), None)  # its state changes here
        closed, pending = stored.read() or (0, frozenset())
        now = fired.micros
        still = frozenset(closing for closing in pending if closing > now)
        stored.write((max(closed, now), still))
        if still:
            timer.set(Timestamp(micros=min(still)))
