"""Accumulate: each discarding pane merged into its window's state; the whole window emitted."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms import userstate
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline import metrics
from stream.pipeline.rollups.accumulators import Accumulator
from stream.pipeline.rollups.gate import window_expiry
from stream.pipeline.rollups.rows import RollupRow, rollup_row

# ((kind, key, window start us, window end us), pane): the accumulation's key carries the window.
Windowed = tuple[tuple[str, str, int, int], Accumulator | None]


ACCUMULATED = userstate.ReadModifyWriteStateSpec("accumulated", PickleCoder())
UPDATES = userstate.ReadModifyWriteStateSpec("updates", VarIntCoder())
CLEANUP = userstate.TimerSpec("cleanup", userstate.TimeDomain.WATERMARK)
_ACCUMULATED = beam.DoFn.StateParam(ACCUMULATED)
_UPDATES = beam.DoFn.StateParam(UPDATES)
_CLEANUP = beam.DoFn.TimerParam(CLEANUP)


class Accumulate(beam.DoFn):
    """Merges each pane into the window's state and emits the whole window's value.

    In the global window with the window in the key, cleared by its own timer at the
    window's expiry; each emission one update number newer (DESIGN.md, "Rollups on Prism").
    """

    def __init__(self, lateness: timedelta) -> None:
        self._lateness = int(lateness.total_seconds() * 1_000_000)

    @no_annotations
    def process(
        self,
        element: Windowed,
        accumulated: Any = _ACCUMULATED,
        updates: Any = _UPDATES,
        cleanup: Any = _CLEANUP,
    ) -> Iterator[RollupRow]:
        (kind, key, start, end), delta = element
        if delta is None:
            return
        whole: Accumulator | None = accumulated.read()
        if whole is None:
            whole = delta
            # After the window's expiry the combine emits nothing more for it.
            cleanup.set(Timestamp(micros=window_expiry(end, self._lateness)))
        else:
            whole.merge(delta)  # type: ignore[arg-type]
        update = updates.read() or 0
        accumulated.write(whole)
        updates.write(update + 1)
        metrics.counter("rollup_panes").inc()
        yield rollup_row(kind, key, whole, start, end, update)

    @userstate.on_timer(CLEANUP)
    def on_cleanup(
        self,
        accumulated: Any = _ACCUMULATED,
        updates: Any = _UPDATES,
    ) -> None:
        accumulated.clear()
        updates.clear()
