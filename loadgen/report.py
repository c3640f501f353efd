"""Live progress while publishing: a bar on a terminal, plain periodic lines otherwise."""

import sys
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class PublishStats:
    """Running totals of one publish run."""

    sent: int = 0
    failed: int = 0
    retries: int = 0
    errors: int = 0  # publish attempts that failed (each is retried or counted as failed)


class Progress:
    """Renders PublishStats: a redrawn bar on a TTY, a line every `every` s otherwise."""

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
        self._tty = stream.isatty()
        self._every = 0.1 if self._tty else every
        self._start = time.monotonic()
        self._last = 0.0

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._start

    def _line(self, stats: PublishStats) -> str:
        elapsed = max(self.elapsed(), 1e-9)
        rate = stats.sent / elapsed
        if self._total:
            done = stats.sent + stats.failed
            fraction = min(1.0, done / self._total)
            eta = (self._total - done) / rate if rate > 0 else float("inf")
        else:
            duration = self._duration or elapsed
            fraction = min(1.0, elapsed / duration)
            eta = max(0.0, duration - elapsed)
        bar = "#" * int(fraction * 30)
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        return (
            f"[{bar:<30}] sent={stats.sent} rate={rate:.0f}/s (asked {self._rate:.0f}/s) "
            f"errors={stats.errors} retries={stats.retries} failed={stats.failed} ETA {eta_text}"
        )

    def update(self, stats: PublishStats, force: bool = False) -> None:
        """Redraw if enough time passed since the last draw."""
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        if self._tty:
            self._out.write("\r" + self._line(stats))
        else:
            self._out.write("publish: " + self._line(stats) + "\n")
        self._out.flush()

    def finish(self, stats: PublishStats) -> str:
        """The closing summary line (also returned, for callers that log it)."""
        if self._tty:
            self.update(stats, force=True)
            self._out.write("\n")
        elapsed = max(self.elapsed(), 1e-9)
        summary = (
            f"publish: sent={stats.sent} failed={stats.failed} retries={stats.retries} "
            f"in {elapsed:.1f}s: achieved {stats.sent / elapsed:.0f}/s (asked {self._rate:.0f}/s)"
        )
        self._out.write(summary + "\n")
        self._out.flush()
        return summary
