"""Live progress of a command: a rich progress bar on a terminal, plain lines otherwise."""

import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PLAIN_EVERY_SECONDS = 1.0  # a log or a test reading the output sees progress this often


def counts_text(counts: Mapping[str, int]) -> str:
    """`read=3000 sent=2900 failed=0`: the counters in the order given."""
    return " ".join(f"{name}={value}" for name, value in counts.items())


class LiveProgress:
    """Progress of `verb` (e.g. redrive): `update(done, counts)` as the work goes on.

    On a terminal, a bar (with `total`, e.g. --limit, a fraction; without one, a pulse: how
    many letters wait in a subscription is not something a pull can tell). Otherwise one
    line `verb: counts (rate/s)` per PLAIN_EVERY_SECONDS, for logs and tests.
    """

    def __init__(self, verb: str, total: int | None = None, stream: TextIO = sys.stderr) -> None:
        self._verb = verb
        self._stream = stream
        self._start = time.monotonic()
        self._last = self._start
        self._bar: Progress | None = None
        if stream.isatty():
            self._bar = Progress(
                TextColumn(f"{verb}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[counts]}"),
                console=Console(file=stream),
            )
            self._task = self._bar.add_task(verb, total=total, counts="")

    def __enter__(self) -> "LiveProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def elapsed(self) -> float:
        """Seconds since the command started."""
        return time.monotonic() - self._start

    def update(self, done: int, counts: Mapping[str, int]) -> None:
        """Show `done` letters (the bar's measure) and the counters."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, counts=counts_text(counts))
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY_SECONDS:
            self._last = now
            rate = done / max(self.elapsed(), 1e-9)
            print(
                f"{self._verb}: {counts_text(counts)} ({rate:.0f}/s)", file=self._stream, flush=True
            )
