"""Realistic, reproducible traffic (`--seed`) and what each message must produce.

Consent traffic has the seed product's shape (loadgen/seed.py): its five domains, its 25
service ids and its subset rule. Content is a pure function of (row key, event-time
millisecond): two events that happen to share both carry identical cells, so "latest event
wins" is never ambiguous. Expectations come from the ledger's own oracle (loadgen/expect.py),
never from the pipeline's code; invalid messages carry the reason they were built to fail with.
With `unknown_service_ratio`, some consent messages name a well-formed service id outside the
pipeline's service catalog: dead letters of kind unknown_service that also know the row they
become once the catalog lists the id (`Ledger.expect_rows_for`).
"""

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loadgen.expect import (
    EPOCH,
    ExpectedRow,
    UnmappableError,
    event_time,
    expected_row,
    rfc3339_millis,
)
from loadgen.seed import SEED_CATEGORIES, SEED_DOMAINS, SEED_SERVICES, endpoint_timestamp, stamp
from schemas.base import MappedEvent
from schemas.registry import DEFAULT_SCHEMA, schemas

SCHEMAS = ("consent.v1", "consent.v2", "telemetry.v1")  # the schemas this generator can build
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
ANY_KIND = ""  # a dead letter of whatever kind (a replayed line the oracle cannot map)
# A replayed line of a schema the oracle does not know (a plugin's): published, not judged.
UNJUDGED = "unjudged"
UNKNOWN_SERVICE = "unknown_service"
UNKNOWN_SERVICE_IDS = 5  # distinct ids outside the catalog that the generator names


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
    reason: str = ""  # the dead-letter kind, when expect == "deadletter" (ANY_KIND: any)
    duplicate_of: int | None = None

    @classmethod
    def row(cls, schema: str, data: bytes, expected: ExpectedRow) -> "Planned":
        """A message that must become `expected` (timestamp PUBLISH_TIME: its publish time)."""
        return cls(
            data=data,
            attributes={"schema": schema},
            schema=schema,
            expect="row",
            table_group=expected.table_group,
            row_key=expected.row_key,
            timestamp_micros=expected.timestamp_micros,
            cells=expected.cells,
        )


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
    devices: int = 1_000
    max_message_bytes: int = 64 * 1024
    # Of the valid consent messages, the share that names one service id outside
    # `service_catalog` (the catalog the pipeline runs with: --service_catalog).
    unknown_service_ratio: float = 0.0
    service_catalog: frozenset[str] = frozenset(SEED_SERVICES)

    def __post_init__(self) -> None:
        problems = []
        if self.out_of_order_seconds > MAX_OUT_OF_ORDER_SECONDS:
            problems.append(
                f"out-of-order-seconds={self.out_of_order_seconds:.0f}: events would be older "
                f"than the pipeline accepts (7 days by default); at most {MAX_OUT_OF_ORDER_SECONDS}"
            )
        if self.users < 1 or self.devices < 1:
            problems.append("users and devices must be at least 1")
        for name in ("invalid_ratio", "duplicate_ratio", "late_ratio", "unknown_service_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        missing = sorted(set(SEED_SERVICES) - self.service_catalog)
        if missing:
            problems.append(
                f"the service catalog lacks {', '.join(missing[:3])}...: the generator offers "
                "the seed's 25 services, so the catalog must list them"
            )
        if problems:
            raise ValueError("; ".join(problems))


def unknown_service_ids(catalog: frozenset[str], count: int = UNKNOWN_SERVICE_IDS) -> list[str]:
    """Well-formed service ids outside `catalog`: the seed's categories, numbers from 6 up.

    Adding them to the catalog is what makes the unknown_service messages valid.
    """
    found: list[str] = []
    number = 6
    while len(found) < count:
        found += [
            f"{category}-{number}"
            for category in SEED_CATEGORIES
            if f"{category}-{number}" not in catalog
        ]
        number += 1
    return found[:count]


def planned_row(schema: str, body: dict[str, object]) -> Planned:
    """A valid body and the row the oracle says it must become."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return Planned.row(schema, data, expected_row(schema, body))


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
        # A plugin's schema is generated by its model's loadgen_example hook (schemas.base).
        self._plugins = {n: m for n, m in schemas().items() if n in names and n not in SCHEMAS}
        unknown = [n for n in names if n not in SCHEMAS and n not in self._plugins]
        cannot = [n for n, model in self._plugins.items() if not model.offers_example()]
        if cannot:
            raise ValueError(
                f"--schema-mix: {', '.join(cannot)} offer no loadgen_example (README, Your own "
                "message types); publish a file of their messages with --from-file instead"
            )
        if unknown or not names or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"--schema-mix: unknown or empty schemas {unknown or names}")
        self._schemas, self._weights = names, weights
        self._kinds = list(INVALID_KINDS)
        self._kind_weights = list(INVALID_KINDS.values())
        self._previous: Planned | None = None
        self._unknown_ids = unknown_service_ids(options.service_catalog)

    def _now(self) -> datetime:
        return self._clock or datetime.now(UTC)

    def _event_time(self) -> datetime:
        moment = self._now()
        if self._rng.random() < self._o.late_ratio:
            moment -= timedelta(seconds=self._rng.uniform(1.0, self._o.out_of_order_seconds))
        return moment - timedelta(microseconds=moment.microsecond % 1000)  # whole millis

    def _consent(self, schema: str, may_name_unknown: bool = False) -> dict[str, object]:
        index = self._rng.randrange(self._o.users)
        user = uuid.UUID(bytes=_digest(self._o.seed, "user", index), version=4)  # no list
        domain = SEED_DOMAINS[index % len(SEED_DOMAINS)]  # a user's domain stays the same
        when = self._event_time()
        # Decisions derive from (user, millisecond): equal keys and times give equal cells.
        # The seed's subset rule, drawn from a generator seeded by that pair.
        pick = random.Random(_digest(user, when.isoformat()))
        offered = pick.sample(SEED_SERVICES, pick.randrange(len(SEED_SERVICES)))
        granted = [s for s in offered if pick.random() < 0.7]  # v1 and v2 store the same
        stamp: object = (
            endpoint_timestamp(when)  # what the seed's scale_endpoint writes
            if pick.random() < 0.5
            else (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        )
        if may_name_unknown and self._o.unknown_service_ratio:
            offered, granted = self._with_unknown(user, when, offered, granted)
        body: dict[str, object] = {"user": str(user), "domain": domain, "message_timestamp": stamp}
        if schema == "consent.v1":
            body["services"] = granted  # may be empty, as the seed's
        else:
            body["services"] = [{"id": s, "granted": s in granted} for s in offered]
            body["region"] = REGIONS[pick.randrange(len(REGIONS))]
        return body

    def _with_unknown(
        self, user: uuid.UUID, when: datetime, offered: list[str], granted: list[str]
    ) -> tuple[list[str], list[str]]:
        """Maybe add a granted service outside the catalog (offered, granted).

        Decided by (user, millisecond) like the rest of the content, with a generator of its
        own so traffic without unknown services stays exactly as it was.
        """
        pick = random.Random(_digest(user, when.isoformat(), UNKNOWN_SERVICE))
        if pick.random() >= self._o.unknown_service_ratio:
            return offered, granted
        unknown = pick.choice(self._unknown_ids)
        offered = list(offered)
        offered.insert(pick.randrange(len(offered) + 1), unknown)
        kept = set(granted) | {unknown}
        return offered, [s for s in offered if s in kept]

    def _names_unknown(self, body: dict[str, object]) -> bool:
        services = body.get("services")
        items = services if isinstance(services, list) else []
        ids = [item["id"] if isinstance(item, dict) else item for item in items]
        return any(service not in self._o.service_catalog for service in ids)

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
            "recorded_at": rfc3339_millis(when),
            "readings": readings,
            "firmware": f"2.{digest[13] % 4}.{digest[14] % 10}",
        }

    def _plugin(self, schema: str, model: type[MappedEvent]) -> Planned:
        """A plugin schema's message: the row is the one its example states."""
        example = model.loadgen_example(self._rng, self._now())
        micros = (example.event_time - EPOCH) // timedelta(milliseconds=1) * 1000
        expected = ExpectedRow(model.table.group, example.row_key, micros, dict(example.cells))
        data = json.dumps(example.body, separators=(",", ":")).encode()
        return Planned.row(schema, data, expected)

    def _valid(self) -> Planned:
        schema = self._rng.choices(self._schemas, self._weights)[0]
        if schema in self._plugins:
            return self._plugin(schema, self._plugins[schema])
        if schema.startswith("telemetry"):
            return planned_row(schema, self._telemetry())
        body = self._consent(schema, may_name_unknown=True)
        planned = planned_row(schema, body)
        if self._names_unknown(body):
            # Refused until the catalog lists the id; the row it then becomes is kept too.
            return replace(planned, expect="deadletter", reason=UNKNOWN_SERVICE)
        return planned

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


@dataclass(frozen=True, slots=True)
class Replay:
    """How `publish --from-file` sends a file's lines, and what it then expects."""

    schema: str = DEFAULT_SCHEMA
    stamp: bool = False  # add `message_timestamp` at publish, as the seed's scale_endpoint did
    max_message_bytes: int = 64 * 1024  # the pipeline's --max_message_bytes
    max_event_age: timedelta = timedelta(days=7)  # its --max_event_age_seconds


def _replayed(line: bytes, replay: Replay, now: datetime) -> Planned:
    """One line's message and expectation, derived by the oracle from the line itself.

    A stamped line must become its row at the stamp. An unstamped one without a time must
    become its row at its publish time (the pipeline runs --missing_event_time=publish_time).
    A line the oracle cannot map (not a well-formed message) is expected as a dead letter of
    whatever kind; one older than the pipeline's maximum age as event_time_out_of_range.
    """
    attributes = {"schema": replay.schema}
    if replay.schema not in SCHEMAS:
        return Planned(line, attributes, replay.schema, UNJUDGED)
    try:
        body = json.loads(line)
        if not isinstance(body, dict):
            raise UnmappableError("not a JSON object")
        time_field = (
            "recorded_at" if replay.schema.startswith("telemetry.") else "message_timestamp"
        )
        # The seed's function stamped consent requests; other schemas are replayed as they are.
        if replay.stamp and time_field == "message_timestamp" and body.get(time_field) is None:
            line = stamp(line.decode(), now).encode()  # as the seed's function re-published it
            body = json.loads(line)
        expected = expected_row(replay.schema, body, publish_time=not replay.stamp)
        when = body.get(time_field)
        stale = when is not None and event_time(when) < now - replay.max_event_age
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):  # UnmappableError is a ValueError
        return Planned(line, attributes, replay.schema, "deadletter", reason=ANY_KIND)
    if len(line) > replay.max_message_bytes:
        return Planned(line, attributes, replay.schema, "deadletter", reason="payload_too_large")
    if stale:
        too_old = "event_time_out_of_range"
        return Planned(line, attributes, replay.schema, "deadletter", reason=too_old)
    return Planned.row(replay.schema, line, expected)


def from_file(path: Path, replay: Replay, clock: datetime | None = None) -> Iterator[Planned]:
    """Replay a JSON-lines file, one message per non-blank line (e.g. the seed's requests).

    Lines are read as they are published, so a stamp is the time of its own publish.
    """
    with path.open("rb") as lines:
        for line in lines:
            data = line.rstrip(b"\r\n")
            if data.strip():
                yield _replayed(data, replay, clock or datetime.now(UTC))
