"""Realistic, reproducible traffic (`--seed`) and what each message must produce.

Content is a pure function of (row key, event-time millisecond): two events that happen to
share both carry identical cells, so "latest event wins" is never ambiguous. Valid events'
expected cells come from the schema mapping; invalid messages carry the reason the
generator built them to fail with.
"""

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.base import MappedEvent, format_rfc3339_millis
from schemas.registry import SCHEMAS
from stream.messages import DeadLetter, RawMessage
from stream.validate import ParseRules, validate

SERVICE_CATALOGUE = tuple(
    f"{kind}-{n}"
    for kind in ("essential", "analytics", "functional", "marketing", "personalisation")
    for n in range(1, 6)
)
REGIONS = ("eu", "us", "apac", "latam", "mea")
READINGS = ("temperature_c", "humidity_pct", "pressure_hpa", "battery_v")
DEFAULT_MIX = {"consent.v1": 0.6, "consent.v2": 0.2, "telemetry.v1": 0.2}
# How invalid messages fail; payload_too_large is rare: each one is over 64 KiB.
INVALID_KINDS = {
    "invalid_json": 10,
    "missing_field": 10,
    "invalid_field": 10,
    "unexpected_field": 5,
    "unknown_schema": 5,
    "not_utf8": 5,
    "empty_payload": 3,
    "event_time_out_of_range": 5,
    "payload_too_large": 1,
}
LOADGEN_ID = "loadgen_id"
MAX_OUT_OF_ORDER_SECONDS = 7 * 24 * 3600 - 3600  # the pipeline's default max age, less 1 h


@dataclass(frozen=True, slots=True)
class Planned:
    """One message to publish and the outcome it must have."""

    data: bytes
    attributes: dict[str, str]
    schema: str
    expect: str  # "row" | "deadletter"
    table_group: str = ""
    row_key: str = ""
    timestamp_micros: int = 0
    cells: dict[str, str] = field(default_factory=dict)  # "family:qualifier" -> value
    reason: str = ""  # the dead-letter kind, when expect == "deadletter"
    duplicate_of: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficOptions:
    """Knobs of the generator (the `publish` command's flags)."""

    seed: int = 1
    schema_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    invalid_ratio: float = 0.0
    duplicate_ratio: float = 0.0
    late_ratio: float = 0.0
    out_of_order_seconds: float = 600.0
    users: int = 10_000
    domains: int = 50
    devices: int = 1_000
    max_message_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        problems = []
        if self.out_of_order_seconds > MAX_OUT_OF_ORDER_SECONDS:
            problems.append(
                f"out-of-order-seconds={self.out_of_order_seconds:.0f}: events would be older "
                f"than the pipeline accepts (7 days by default); at most {MAX_OUT_OF_ORDER_SECONDS}"
            )
        if self.users < 1 or self.devices < 1:
            problems.append("users and devices must be at least 1")
        for name in ("invalid_ratio", "duplicate_ratio", "late_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))


def _row_for(schema: str, data: bytes, event: MappedEvent) -> Planned:
    return Planned(
        data=data,
        attributes={"schema": schema},
        schema=schema,
        expect="row",
        table_group=event.table.group,
        row_key=event.row_key(),
        timestamp_micros=event.timestamp_micros(),
        cells={f"{c.family}:{c.qualifier.decode()}": c.value.decode() for c in event.cells()},
    )


def expected_row(schema: str, body: dict[str, object]) -> Planned:
    """What a valid body must produce, through the schema's own mapping."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return _row_for(schema, data, SCHEMAS[schema].model_validate_json(data))


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


class TrafficGenerator:
    """An endless, seeded stream of Planned messages."""

    def __init__(self, options: TrafficOptions, clock: datetime | None = None) -> None:
        self._o = options
        self._rng = random.Random(options.seed)
        self._clock = clock
        names = list(options.schema_mix)
        weights = [options.schema_mix[n] for n in names]
        unknown = [n for n in names if n not in SCHEMAS]
        if unknown or not names or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"--schema-mix: unknown or empty schemas {unknown or names}")
        self._schemas, self._weights = names, weights
        self._kinds = list(INVALID_KINDS)
        self._kind_weights = list(INVALID_KINDS.values())
        self._previous: Planned | None = None

    def _now(self) -> datetime:
        return self._clock or datetime.now(UTC)

    def _event_time(self) -> datetime:
        moment = self._now()
        if self._rng.random() < self._o.late_ratio:
            moment -= timedelta(seconds=self._rng.uniform(1.0, self._o.out_of_order_seconds))
        return moment - timedelta(microseconds=moment.microsecond % 1000)  # whole millis

    def _consent(self, schema: str) -> dict[str, object]:
        index = self._rng.randrange(self._o.users)
        user = uuid.UUID(bytes=_digest(self._o.seed, "user", index), version=4)  # no list
        domain = f"shop{index % self._o.domains}.example.com"
        when = self._event_time()
        # Decisions derive from (user, millisecond): equal keys and times give equal cells.
        digest = _digest(user, when.isoformat())
        offered = [s for i, s in enumerate(SERVICE_CATALOGUE) if digest[(i + 3) % 16] % 3]
        granted = [s for i, s in enumerate(SERVICE_CATALOGUE) if digest[i % 16] >> (i // 16) & 1]
        granted = [s for s in offered if s in granted]  # v1 and v2 store the same `services`
        stamp: object = (
            when.isoformat()
            if digest[0] % 2
            else (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        )
        body: dict[str, object] = {"user": str(user), "domain": domain, "message_timestamp": stamp}
        if schema == "consent.v1":
            body["services"] = granted  # may be empty
        else:
            body["services"] = [{"id": s, "granted": s in granted} for s in offered]
            body["region"] = REGIONS[digest[1] % len(REGIONS)]
        return body

    def _telemetry(self) -> dict[str, object]:
        device = f"sensor-{self._rng.randrange(self._o.devices):05d}"
        when = self._event_time()
        digest = _digest(device, when.isoformat())
        readings = {
            name: round(int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 655.36, 2)
            for i, name in enumerate(READINGS)
            if digest[12] >> i & 1 or i == 0
        }
        return {
            "device_id": device,
            "recorded_at": format_rfc3339_millis(when),
            "readings": readings,
            "firmware": f"2.{digest[13] % 4}.{digest[14] % 10}",
        }

    def _valid(self) -> Planned:
        schema = self._rng.choices(self._schemas, self._weights)[0]
        body = self._telemetry() if schema.startswith("telemetry") else self._consent(schema)
        return expected_row(schema, body)

    def _invalid(self) -> Planned:
        kind = self._rng.choices(self._kinds, self._kind_weights)[0]
        good = self._consent("consent.v1")
        attributes = {"schema": "consent.v1"}
        data: bytes
        if kind == "invalid_json":
            data = json.dumps(good).encode()[:-3]
        elif kind == "missing_field":
            data = json.dumps({k: v for k, v in good.items() if k != "domain"}).encode()
        elif kind == "invalid_field":
            data = json.dumps({**good, "user": "not-a-uuid"}).encode()
        elif kind == "unexpected_field":
            data = json.dumps({**good, "campaign": "x"}).encode()
        elif kind == "unknown_schema":
            data, attributes = json.dumps(good).encode(), {"schema": "consent.v0"}
        elif kind == "not_utf8":
            data = b"\xff\xfe" + json.dumps(good).encode()
        elif kind == "empty_payload":
            data = b""  # carries the schema attribute: Pub/Sub refuses fully empty messages
        elif kind == "event_time_out_of_range":
            data = json.dumps({**good, "message_timestamp": "2001-02-03T04:05:06Z"}).encode()
        else:  # payload_too_large
            data = json.dumps({**good, "pad": "x" * self._o.max_message_bytes}).encode()
        return Planned(data, attributes, "consent.v1", "deadletter", reason=kind)

    def __iter__(self) -> Iterator[Planned]:
        while True:
            if self._previous is not None and self._rng.random() < self._o.duplicate_ratio:
                yield replace(self._previous, duplicate_of=-1)  # -1: "the previous message"
                continue
            planned = (
                self._invalid() if self._rng.random() < self._o.invalid_ratio else self._valid()
            )
            self._previous = planned
            yield planned


def from_file(
    path: Path, schema: str = "consent.v1", max_message_bytes: int = 64 * 1024
) -> Iterator[Planned]:
    """Replay a JSON-lines file: one message body per line (e.g. the seed's consent format).

    Expectations come from validating each line as the pipeline does with its default
    limits: a valid line must become its row, an invalid one a dead letter with that reason.
    """
    rules = ParseRules(default_schema=schema, max_message_bytes=max_message_bytes)
    with path.open("rb") as lines:
        for line in lines:
            data = line.rstrip(b"\r\n")
            if not data.strip():
                continue
            outcome = validate(
                RawMessage(data=data, attributes={"schema": schema}), rules, datetime.now(UTC)
            )
            if isinstance(outcome, DeadLetter):
                yield Planned(
                    data, {"schema": schema}, schema, "deadletter", reason=str(outcome.kind)
                )
            else:
                yield _row_for(schema, data, outcome.event)
