"""Fixed event-time windows, in whole milliseconds: when a window is due and when it closes.

Milliseconds because Prism keeps time in milliseconds (stream/DESIGN.md, "Millisecond
expiries"): a window's first value is due when the watermark reaches its end less 1 ms (its
last millisecond), and it closes (takes no more late data) `lateness` after that.
"""

from dataclasses import dataclass
from datetime import timedelta

MS = 1000  # microseconds


@dataclass(frozen=True, slots=True)
class Windowing:
    """Window size and allowed lateness, in microseconds (whole milliseconds)."""

    size: int
    lateness: int

    @classmethod
    def of(cls, window: timedelta, lateness: timedelta) -> "Windowing":
        """The windowing of `--window_seconds` and `--allowed_lateness_seconds`, in whole ms."""
        return cls(
            size=int(window.total_seconds() * 1000) * MS,
            lateness=int(lateness.total_seconds() * 1000) * MS,
        )

    def start(self, event_ms: int) -> int:
        """The start (micros) of the window holding an event time (ms)."""
        size_ms = self.size // MS
        return (event_ms - event_ms % size_ms) * MS

    def end(self, start: int) -> int:
        """The window's end (exclusive), micros."""
        return start + self.size

    def due(self, start: int) -> int:
        """When the window's first value is due: the watermark has reached its last ms."""
        return self.end(start) - MS

    def expiry(self, start: int) -> int:
        """When the window closes: no late update after the watermark passed this."""
        return self.due(start) + self.lateness
