"""Accumulate: each key's open windows in state; a window's value when due, then late updates.

Keyed by (kind, key), in the global window, so the runner never drops an element as late:
every event either updates its window or, when its window has already closed for its key,
comes out `too_late` for a dead letter. Nothing leaves the rollups silently.

A window's first value is emitted when the watermark reaches it (one event-time timer per
key, at the earliest due or closing time of its windows); each later change emits the whole
window again, one update number newer, so the newest cell version is always the full value
whatever order the writes land in, and a retried bundle (which restarts from the committed
state) rewrites the same cells. A window closes `lateness` after it was due: its state is
dropped and the key remembers how far it has closed. An event for a window the key never
held is accepted even if the watermark has passed its closing time (a DoFn cannot see the
watermark): its window opens, emits, and closes at once, so its row holds exactly the events
that arrived for it; it is never dropped.
"""

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import userstate
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.rollups.accumulators import Accumulator, new_accumulator
from stream.pipeline.rollups.preaggregate import Grouped, windowing
from stream.pipeline.rollups.rows import RollupRow, rollup_row

TOO_LATE = "too_late"
STATE_SAMPLE_EVERY = 64  # state writes between two measurements of its serialised size


@dataclass
class _Window:
    acc: Accumulator
    update: int = 0  # the next update number (0: the first value is not out yet)


@dataclass
class KeyState:
    """One rollup key's open windows (by start, micros) and how far it has closed them."""

    windows: dict[int, _Window] = field(default_factory=dict)
    closed_up_to: int = 0  # the latest closing time (micros) the key's timer has passed

    def events(self) -> int:
        """Events held in the key's open windows."""
        return sum(len(w.acc.events) for w in self.windows.values())


STATE = userstate.ReadModifyWriteStateSpec("key_state", PickleCoder())
TIMER = userstate.TimerSpec("due", userstate.TimeDomain.WATERMARK)
_STATE = beam.DoFn.StateParam(STATE)
_TIMER = beam.DoFn.TimerParam(TIMER)


class Accumulate(beam.DoFn):
    """RollupRows (main output) and too-late members (tagged `too_late`)."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._windowing = windowing(window, lateness)
        self._panes = metrics.counter("rollup_panes")
        self._too_late = metrics.counter("rollup_too_late")
        self._state_bytes = beam.metrics.Metrics.distribution(
            metrics.NAMESPACE, "rollup_state_bytes_per_event"
        )
        self._writes = 0

    def _row(self, kind: str, key: str, start: int, window: _Window) -> RollupRow:
        row = rollup_row(kind, key, window.acc, start, self._windowing.end(start), window.update)
        window.update += 1
        self._panes.inc()
        return row

    def _next_due(self, state: KeyState) -> int | None:
        times = [
            self._windowing.due(start) if w.update == 0 else self._windowing.expiry(start)
            for start, w in state.windows.items()
        ]
        return min(times) if times else None

    def _save(self, state: KeyState, stored: Any, timer: Any) -> None:
        stored.write(state)
        due = self._next_due(state)
        if due is not None:
            timer.set(Timestamp(micros=due))
        self._writes += 1
        if self._writes % STATE_SAMPLE_EVERY == 1 and state.windows:
            # What the runner holds for this key, per event inside the allowed lateness.
            size = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            self._state_bytes.update(size // max(1, state.events()))

    @no_annotations
    def process(
        self, element: Grouped, stored: Any = _STATE, timer: Any = _TIMER
    ) -> Iterator[RollupRow | TaggedOutput]:
        (kind, key), windows = element
        state: KeyState = stored.read() or KeyState()
        for start, members in sorted(windows.items()):
            if self._windowing.expiry(start) <= state.closed_up_to:
                self._too_late.inc(len(members))
                for item in members:
                    yield TaggedOutput(TOO_LATE, (kind, key, start, item))
                continue
            window = state.windows.get(start)
            if window is None:
                window = state.windows[start] = _Window(new_accumulator(kind))
            changed = [window.acc.add(item.fact) for item in members]
            if window.update > 0 and any(changed):  # a late update of a window already out
                yield self._row(kind, key, start, window)
        self._save(state, stored, timer)

    @userstate.on_timer(TIMER)
    def on_due(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired: Timestamp = beam.DoFn.TimestampParam,
        stored: Any = _STATE,
        timer: Any = _TIMER,
    ) -> Iterator[RollupRow]:
        kind, name = key
        state: KeyState | None = stored.read()
        if state is None:
            return
        now = fired.micros
        for start in sorted(state.windows):
            window = state.windows[start]
            if window.update == 0 and self._windowing.due(start) <= now:
                yield self._row(kind, name, start, window)
            if self._windowing.expiry(start) <= now:
                del state.windows[start]
                state.closed_up_to = max(state.closed_up_to, self._windowing.expiry(start))
        if state.windows or state.closed_up_to:
            self._save(state, stored, timer)
        else:
            stored.clear()


__all__ = ["TOO_LATE", "Accumulate", "KeyState"]
