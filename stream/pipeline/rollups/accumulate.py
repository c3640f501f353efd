"""Accumulate: one window of one key in state; its value when due, then one per change.

Keyed by (kind, key, window start), in the global window, so the runner never drops its
input as late (the gate decides lateness). A window's first value is emitted when the
watermark reaches its last millisecond; each later change emits the whole window again,
one update number newer, so the newest cell version is always the full value whatever
order the writes land in, and a retried bundle (which restarts from the committed state)
rewrites the same cells. When the window closes its state is dropped.
"""

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms import userstate
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.rollups.accumulators import Accumulator, new_accumulator
from stream.pipeline.rollups.gate import WindowKey, WindowMembers
from stream.pipeline.rollups.rows import RollupRow, rollup_row
from stream.pipeline.rollups.windows import Windowing

STATE_SAMPLE_EVERY = 64  # state writes between two measurements of its serialised size


@dataclass
class OpenWindow:
    """One open window of a key: its accumulator and the next update number."""

    acc: Accumulator
    update: int = 0  # the next update number (0: the first value is not out yet)


STATE = userstate.ReadModifyWriteStateSpec("window", PickleCoder())
DUE = userstate.TimerSpec("due", userstate.TimeDomain.WATERMARK)
CLOSE = userstate.TimerSpec("close", userstate.TimeDomain.WATERMARK)
_STATE = beam.DoFn.StateParam(STATE)
_DUE = beam.DoFn.TimerParam(DUE)
_CLOSE = beam.DoFn.TimerParam(CLOSE)


class Accumulate(beam.DoFn):
    """RollupRows: a window's first value when due, then one per change until it closes."""

    def __init__(self, window: timedelta, lateness: timedelta) -> None:
        self._windowing = Windowing.of(window, lateness)
        self._panes = metrics.counter(metrics.ROLLUP_PANES)
        self._state_bytes = metrics.distribution(metrics.ROLLUP_STATE_BYTES_PER_EVENT)
        self._writes = 0

    def _row(self, key: WindowKey, window: OpenWindow) -> RollupRow:
        kind, name, start = key
        row = rollup_row(kind, name, window.acc, start, self._windowing.end(start), window.update)
        window.update += 1
        self._panes.inc()
        return row

    def _save(self, window: OpenWindow, stored: Any) -> None:
        stored.write(window)
        self._writes += 1
        if self._writes % STATE_SAMPLE_EVERY == 1:
            # What the runner holds for this window, per event in it.
            size = len(pickle.dumps(window, protocol=pickle.HIGHEST_PROTOCOL))
            self._state_bytes.update(size // max(1, len(window.acc.events)))

    @no_annotations
    def process(
        self, element: WindowMembers, stored: Any = _STATE, due: Any = _DUE, close: Any = _CLOSE
    ) -> Iterator[RollupRow]:
        key, members = element
        kind, _, start = key
        window: OpenWindow | None = stored.read()
        if window is None:
            window = OpenWindow(new_accumulator(kind))
            due.set(Timestamp(micros=self._windowing.due(start)))
            close.set(Timestamp(micros=self._windowing.expiry(start)))
        changed = [window.acc.add(item.fact) for item in members]
        if window.update > 0 and any(changed):  # a late update of a window already out
            yield self._row(key, window)
        self._save(window, stored)

    @staticmethod
    def _not_out_yet(stored: Any) -> OpenWindow | None:
        """The window held in `stored` if its first value has not been emitted."""
        window: OpenWindow | None = stored.read()
        return window if window is not None and window.update == 0 else None

    @userstate.on_timer(DUE)
    def on_due(self, key: Any = beam.DoFn.KeyParam, stored: Any = _STATE) -> Iterator[RollupRow]:
        window = self._not_out_yet(stored)
        if window is not None:
            yield self._row(tuple(key), window)
            self._save(window, stored)

    @userstate.on_timer(CLOSE)
    def on_close(self, key: Any = beam.DoFn.KeyParam, stored: Any = _STATE) -> Iterator[RollupRow]:
        window = self._not_out_yet(stored)
        if window is not None:  # opened after its closing time: both timers due at once
            yield self._row(tuple(key), window)
        stored.clear()
