"""Live progress while publishing: a rich progress bar on a terminal, plain lines otherwise."""

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


@dataclass
class PublishStats:
    """Running totals of one publish run."""

    sent: int = 0
    failed: int = 0
    retries: int = 0
    errors: int = 0  # publish attempts that failed (each is retried or counted as failed)


class Progress:
    """Renders PublishStats: rich's bar on a TTY, a `publish:` line every `every` s otherwise.

    The bar's measure is messages (with `total`) or seconds (with `duration`); its text shows
    the achieved rate against the asked one and the error counts.
    """

    def __init__(
        self,
        asked_rate: float,
        total: int | None,
        duration: float | None,
        stream: TextIO = sys.stderr,
        every: float = 5.0,
    ) -> None:
        self._rate = asked_rate
        self._total = total
        self._duration = duration
        self._out = stream
        self._every = every
        self._start = time.monotonic()
        self._last = 0.0
        self._bar: RichProgress | None = None
        if stream.isatty():
            self._bar = RichProgress(
                TextColumn("publish"),
                BarColumn(),
                TextColumn("{task.fields[text]}"),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=False,
            )
            measure = float(total) if total else duration
            self._task = self._bar.add_task("publish", total=measure, text="")
            self._bar.start()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._start

    def _text(self, stats: PublishStats) -> str:
        rate = stats.sent / max(self.elapsed(), 1e-9)
        return (
            f"sent={stats.sent} rate={rate:.0f}/s (asked {self._rate:.0f}/s) "
            f"errors={stats.errors} retries={stats.retries} failed={stats.failed}"
        )

    def update(self, stats: PublishStats, force: bool = False) -> None:
        """Redraw the bar, or print a line when `every` seconds passed (or `force`)."""
        if self._bar is not None:
            done = stats.sent + stats.failed if self._total else self.elapsed()
            self._bar.update(self._task, completed=done, text=self._text(stats))
            return
        now = time.monotonic()
        if force or now - self._last >= self._every:
            self._last = now
            self._out.write(f"publish: {self._text(stats)}\n")
            self._out.flush()

    def finish(self, stats: PublishStats) -> str:
        """Stop the bar; print and return the closing summary line."""
        if self._bar is not None:
            self.update(stats)
            self._bar.stop()
        elapsed = max(self.elapsed(), 1e-9)
        summary = (
            f"publish: sent={stats.sent} failed={stats.failed} retries={stats.retries} "
            f"in {elapsed:.1f}s: achieved {stats.sent / elapsed:.0f}/s (asked {self._rate:.0f}/s)"
        )
        self._out.write(summary + "\n")
        self._out.flush()
        return summary
