"""Accumulators: the distinct events of one key in one window, and the values they give.

An event counts once by its identity (a duplicate publish, a Pub/Sub redelivery or a retried
bundle changes nothing): `add` tells whether the fact was new. Sums are exact fractions, so
a mean does not depend on the order in which events arrived.
"""

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from schemas.base import Encoding, encode
from stream.pipeline.rollups.facts import ConsentFact, Fact, TelemetryFact


@dataclass
class ConsentAccumulator:
    """One domain's window: distinct requests and users, and requests per granted service."""

    events: set[int] = field(default_factory=set)
    users: set[int] = field(default_factory=set)
    services: Counter[str] = field(default_factory=Counter)

    def add(self, fact: Fact) -> bool:
        if not isinstance(fact, ConsentFact):
            raise TypeError(f"a consent window takes consent facts, not {fact!r}")
        if fact.event in self.events:
            return False
        self.events.add(fact.event)
        self.users.add(fact.user)
        self.services.update(fact.services)
        return True

    def values(self) -> dict[str, str]:
        """requests, distinct_users, and `service:<id>` = requests granting that service."""
        values = {"requests": str(len(self.events)), "distinct_users": str(len(self.users))}
        values.update({f"service:{name}": str(n) for name, n in self.services.items()})
        return values


@dataclass
class _Series:
    count: int = 0
    low: float = float("inf")
    high: float = float("-inf")
    total: Fraction = field(default_factory=Fraction)

    def add(self, value: float) -> None:
        self.count += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.total += Fraction(value)


@dataclass
class TelemetryAccumulator:
    """One device's window: distinct reading times, and count/min/max/sum per reading."""

    events: set[int] = field(default_factory=set)
    series: dict[str, _Series] = field(default_factory=dict)

    def add(self, fact: Fact) -> bool:
        if not isinstance(fact, TelemetryFact):
            raise TypeError(f"a telemetry window takes telemetry facts, not {fact!r}")
        if fact.event in self.events:
            return False
        self.events.add(fact.event)
        for name, value in fact.readings:
            self.series.setdefault(name, _Series()).add(value)
        return True

    def values(self) -> dict[str, str]:
        """`readings`, and `<reading>:count|min|max|mean` for every reading seen."""
        values = {"readings": str(len(self.events))}
        for name, series in self.series.items():
            values[f"{name}:count"] = str(series.count)
            values[f"{name}:min"] = encode(series.low, Encoding.TEXT).decode()
            values[f"{name}:max"] = encode(series.high, Encoding.TEXT).decode()
            mean = float(series.total / series.count)  # exact sum, one rounding
            values[f"{name}:mean"] = encode(mean, Encoding.TEXT).decode()
        return values


Accumulator = ConsentAccumulator | TelemetryAccumulator


def new_accumulator(kind: str) -> Accumulator:
    """An empty accumulator for `consent` or `telemetry`."""
    return ConsentAccumulator() if kind == "consent" else TelemetryAccumulator()
