"""A token bucket: a steady publish rate with a small burst, and the achieved-rate figure."""

import math
import time
from collections.abc import Callable


class TokenBucket:
    """Allows `rate` events per second on average, at most `burst` at once.

    `clock` and `sleep` are injectable so the arithmetic is testable without waiting.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a positive number, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 20)  # 50 ms of traffic
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, count: float = 1.0) -> None:
        """Take `count` tokens, sleeping off any debt (works for count > burst too)."""
        self._refill()
        self._tokens -= count
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)
