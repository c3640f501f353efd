"""What an event contributes to its rollup: a compact fact with a fixed-size identity.

A consent event counts once per (user, event millisecond) and a reading once per (device,
event millisecond): those identities are kept as 64-bit digests (blake2b, the same in every
process), so the state of a window grows by a few bytes per event, not by the event's size.
"""

import hashlib
import sys
from typing import Any, NamedTuple

from schemas.base import epoch_millis
from schemas.consent import ConsentV1, ConsentV2
from schemas.telemetry import TelemetryV1
from stream.pipeline.messages import ValidEvent


class ConsentFact(NamedTuple):
    """One consent request: its identity, its user's, and the services it grants."""

    event: int  # digest of (user, event ms)
    user: int  # digest of the user
    services: tuple[str, ...]


class TelemetryFact(NamedTuple):
    """One device reading set: its event millisecond (the device is the key) and values."""

    event: int  # event ms
    readings: tuple[tuple[str, float], ...]


Fact = ConsentFact | TelemetryFact


class Member(NamedTuple):
    """A fact and the message behind it: a too-late event's dead letter carries its bytes."""

    fact: Fact
    event_ms: int
    message_id: str
    data: bytes
    attributes: dict[str, str]
    schema: str


def digest(*parts: object) -> int:
    """A 64-bit identity, stable across processes (unlike hash())."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def observe(event: Any, millis: int) -> tuple[str, str, Fact] | None:
    """(kind, key, fact) of a validated event at `millis`, or None for types without rollups."""
    if isinstance(event, ConsentV1 | ConsentV2):
        user = str(event.user)
        if isinstance(event, ConsentV1):
            granted = event.services
        else:
            granted = [grant.id for grant in event.services if grant.granted]
        # Interned: the many equal service ids of a bundle pickle once (pickle memoises by
        # object, not by value).
        services = tuple(sys.intern(s) for s in granted)
        return "consent", event.domain, ConsentFact(digest(user, millis), digest(user), services)
    if isinstance(event, TelemetryV1):
        readings = tuple(sorted((name, float(v)) for name, v in event.readings.items()))
        return "telemetry", event.device_id, TelemetryFact(millis, readings)
    return None


def member(event: ValidEvent) -> tuple[str, str, Member] | None:
    """(kind, key, member) of a validated event, or None for types without rollups."""
    millis = epoch_millis(event.event.event_time())
    observed = observe(event.event, millis)
    if observed is None:
        return None
    kind, key, fact = observed
    raw = event.raw
    schema = event.event.schema_name
    return kind, key, Member(fact, millis, raw.message_id, raw.data, raw.attributes, schema)
