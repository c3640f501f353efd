"""LatenessGate: lets an event into the windowed rollup only while its window can still change.

Beam gives a DoFn no view of the watermark, and a windowed GroupByKey silently drops what
arrives after its window expired. The gate makes that drop visible: per key it keeps one
event-time timer at the earliest pending window expiry (window end + allowed lateness). A
pending timer holds the gate's output watermark, so the combine downstream cannot expire a
window the gate still lets elements into; once the timer fired, the watermark has passed
that expiry, and any later element for such a window is provably too late.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import userstate
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.rollups.facts import Keyed

TOO_LATE = "too_late"


def window_expiry(end_micros: int, lateness_micros: int) -> int:
    """When a window stops accepting late data: end - 1 ms + allowed lateness (see the gate)."""
    return end_micros - 1000 + lateness_micros


EXPIRIES = userstate.BagStateSpec("expiries", VarIntCoder())  # pending window expiries
EXPIRED = userstate.ReadModifyWriteStateSpec("expired_up_to", VarIntCoder())
TIMER = userstate.TimerSpec("expiry", userstate.TimeDomain.WATERMARK)
_EXPIRIES = beam.DoFn.StateParam(EXPIRIES)
_EXPIRED = beam.DoFn.StateParam(EXPIRED)
_TIMER = beam.DoFn.TimerParam(TIMER)


class LatenessGate(beam.DoFn):
    """Passes elements whose window can still be updated; tags the others `too_late`."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._window = int(window.total_seconds() * 1_000_000)
        self._lateness = int(lateness.total_seconds() * 1_000_000)
        self._too_late = metrics.counter("rollup_too_late")
        # key -> (expired up to, pending expiries), read once per key and bundle (DESIGN.md).
        self._seen: dict[tuple[str, str], tuple[int, set[int]]] = {}

    def start_bundle(self) -> None:
        self._seen = {}

    def _expiry(self, event_micros: int) -> int:
        # At the window's expiry, in milliseconds (DESIGN.md, "Millisecond expiries").
        start = event_micros - event_micros % self._window
        return window_expiry(start + self._window, self._lateness)

    @no_annotations
    def process(
        self,
        element: Keyed,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
        expiries: Any = _EXPIRIES,
        expired: Any = _EXPIRED,
        timer: Any = _TIMER,
    ) -> Iterator[Any]:
        expiry = self._expiry(timestamp.micros)
        key = element[0]
        if key not in self._seen:
            self._seen[key] = (expired.read() or 0, set(expiries.read()))
        expired_up_to, pending = self._seen[key]
        if expiry <= expired_up_to:
            self._too_late.inc()
            yield TaggedOutput(TOO_LATE, TimestampedValue(element, timestamp))
            return
        if expiry not in pending:
            expiries.add(expiry)
            if not pending or expiry < min(pending):
                timer.set(Timestamp(micros=expiry))  # holds the watermark below the expiry
            pending.add(expiry)
        yield TimestampedValue(element, timestamp)

    @userstate.on_timer(TIMER)
    def on_expiry(
        self,
        fired: Timestamp = beam.DoFn.TimestampParam,
        expiries: Any = _EXPIRIES,
        expired: Any = _EXPIRED,
        timer: Any = _TIMER,
    ) -> None:
        now = fired.micros
        self._seen.clear()  # state changes here: forget what this bundle read
        pending = sorted(e for e in set(expiries.read()) if e > now)
        expiries.clear()
        for expiry in pending:
            expiries.add(expiry)
        expired.write(max(expired.read() or 0, now))
        if pending:
            timer.set(Timestamp(micros=pending[0]))
