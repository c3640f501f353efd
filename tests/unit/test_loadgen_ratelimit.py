"""TokenBucket arithmetic on a fake clock: the sleeps it asks for, not real waiting."""

import math

import pytest

from loadgen.ratelimit import TokenBucket


class FakeTime:
    """A monotonic clock that only moves when the bucket sleeps (or the test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds

    def elapsed(self, start: float = 1000.0) -> float:
        return self.now - start


def bucket(rate: float, burst: float | None = None) -> tuple[TokenBucket, FakeTime]:
    fake = FakeTime()
    return TokenBucket(rate, burst, clock=fake.clock, sleep=fake.sleep), fake


@pytest.mark.parametrize(
    ("rate", "burst", "count"),
    [(100.0, 5.0, 1000), (1000.0, None, 5000), (7.0, 1.0, 50), (250.0, 10.0, 10)],
)
def test_n_acquires_take_n_over_rate_within_the_burst(
    rate: float, burst: float | None, count: int
) -> None:
    limiter, fake = bucket(rate, burst)
    for _ in range(count):
        limiter.acquire()
    # The first `burst` tokens are free; every further token costs exactly 1/rate.
    expected = max(0.0, count - limiter.burst) / rate
    assert fake.elapsed() == pytest.approx(expected, abs=1e-9)
    assert count / rate - limiter.burst / rate - 1e-9 <= fake.elapsed() <= count / rate


def test_default_burst_is_50_ms_of_traffic_but_at_least_one() -> None:
    assert bucket(1000.0)[0].burst == 50.0
    assert bucket(10.0)[0].burst == 1.0


def test_the_first_burst_is_free_then_each_token_waits_one_interval() -> None:
    limiter, fake = bucket(rate=10.0, burst=3.0)
    for _ in range(3):
        limiter.acquire()
    assert fake.sleeps == []
    limiter.acquire()
    limiter.acquire()
    assert fake.sleeps == pytest.approx([0.1, 0.1])


def test_idle_time_refills_at_most_the_burst() -> None:
    limiter, fake = bucket(rate=10.0, burst=4.0)
    for _ in range(4):
        limiter.acquire()
    fake.now += 3600.0  # an hour idle must not bank 36,000 tokens
    for _ in range(4):
        limiter.acquire()
    assert fake.sleeps == []
    limiter.acquire()
    assert fake.sleeps == pytest.approx([0.1])


def test_partial_refill_is_proportional_to_elapsed_time() -> None:
    limiter, fake = bucket(rate=10.0, burst=2.0)
    limiter.acquire()
    limiter.acquire()
    fake.now += 0.05  # half a token
    limiter.acquire()
    assert fake.sleeps == pytest.approx([0.05])


def test_acquire_more_than_the_burst_sleeps_off_the_debt() -> None:
    limiter, fake = bucket(rate=10.0, burst=2.0)
    limiter.acquire(5.0)
    assert fake.sleeps == pytest.approx([0.3])  # 2 free, 3 owed at 10/s
    limiter.acquire()
    # The debt was paid by sleeping, and no credit was banked meanwhile.
    assert fake.sleeps == pytest.approx([0.3, 0.1])
    assert fake.elapsed() == pytest.approx(0.4)


def test_large_counts_match_the_steady_rate() -> None:
    limiter, fake = bucket(rate=500.0, burst=25.0)
    for _ in range(10):
        limiter.acquire(100.0)
    assert fake.elapsed() == pytest.approx((1000 - 25) / 500.0)


@pytest.mark.parametrize("rate", [0.0, -1.0, -0.001, -math.inf])
def test_non_positive_rate_is_rejected(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be a positive number"):
        TokenBucket(rate)


def test_nan_rate_is_rejected() -> None:
    with pytest.raises(ValueError):
        TokenBucket(math.nan)
