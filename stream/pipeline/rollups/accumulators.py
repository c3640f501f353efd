"""Accumulators: the distinct events of one key in one window, and the values they give.

Keyed by event identity ((user, event ms) for consent, event ms for a device's readings), so
a message delivered twice (a duplicate publish, a Pub/Sub redelivery) counts once, and
merging a pane twice (a retried bundle) changes nothing.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from schemas.base import Encoding, encode
from stream.pipeline.rollups.facts import ConsentFact, TelemetryFact


@dataclass
class ConsentAccumulator:
    """Distinct requests of one domain in one window: (user, event ms) -> granted services."""

    requests: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)

    def add(self, fact: ConsentFact) -> None:
        user, millis, services = fact
        self.requests[(user, millis)] = services

    def merge(self, other: "ConsentAccumulator") -> None:
        self.requests.update(other.requests)


@dataclass
class TelemetryAccumulator:
    """Distinct readings of one device in one window: event ms -> readings."""

    readings: dict[int, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    def add(self, fact: TelemetryFact) -> None:
        millis, values = fact
        self.readings[millis] = values

    def merge(self, other: "TelemetryAccumulator") -> None:
        self.readings.update(other.readings)


Accumulator = ConsentAccumulator | TelemetryAccumulator


def new_accumulator(kind: str) -> Accumulator:
    """An empty accumulator for `consent` or `telemetry`."""
    return ConsentAccumulator() if kind == "consent" else TelemetryAccumulator()


def consent_values(acc: ConsentAccumulator) -> dict[str, str]:
    """requests, distinct_users, and `service:<id>` = requests granting that service."""
    services: Counter[str] = Counter()
    for granted in acc.requests.values():
        services.update(granted)
    values = {
        "requests": str(len(acc.requests)),
        "distinct_users": str(len({user for user, _ in acc.requests})),
    }
    values.update({f"service:{name}": str(n) for name, n in services.items()})
    return values


def telemetry_values(acc: TelemetryAccumulator) -> dict[str, str]:
    """`<reading>:count|min|max|mean` for every reading seen in the window."""
    by_name: dict[str, list[float]] = {}
    for readings in acc.readings.values():
        for name, value in readings:
            by_name.setdefault(name, []).append(value)
    values = {"readings": str(len(acc.readings))}
    for name, series in by_name.items():
        values[f"{name}:count"] = str(len(series))
        values[f"{name}:min"] = encode(min(series), Encoding.TEXT).decode()
        values[f"{name}:max"] = encode(max(series), Encoding.TEXT).decode()
        values[f"{name}:mean"] = encode(sum(series) / len(series), Encoding.TEXT).decode()
    return values


class Aggregate(beam.CombineFn):
    """Merges facts into the kind's accumulator (distinct by event identity)."""

    def create_accumulator(self) -> Accumulator | None:
        return None

    def add_input(self, acc: Accumulator | None, element: tuple[str, Any]) -> Accumulator:
        kind, fact = element
        acc = acc if acc is not None else new_accumulator(kind)
        acc.add(fact)
        return acc

    def merge_accumulators(self, accumulators: Iterable[Accumulator | None]) -> Accumulator | None:
        merged: Accumulator | None = None
        for acc in accumulators:
            if acc is None:
                continue
            if merged is None:
                merged = acc
            else:
                merged.merge(acc)  # type: ignore[arg-type]
        return merged

    def extract_output(self, acc: Accumulator | None) -> Accumulator | None:
        return acc
