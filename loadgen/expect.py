"""The ledger's own oracle: the row a message body must become, from the documented mapping.

Written from the README's contract, never with the pipeline's validation or mapping code, so
that a mistake there shows up in `verify` instead of being copied into the expectation:
- consent (v1, v2): table group `consent`, key `<domain, lower case>#<user, canonical uuid>`,
  `cf1:services` the (granted) ids as compact JSON, `cf1:message_timestamp` RFC 3339 UTC with
  milliseconds; v2 adds `cf1:services_detail` (compact JSON, sorted keys) and `cf1:region`.
- telemetry.v1: group `telemetry`, key `<device>#<13-digit epoch ms>`, `m:firmware`,
  `m:recorded_at`, one `r:<reading>` per reading (Python's repr of the float).
- the cell timestamp is the event time, truncated to the millisecond.
It maps well-formed bodies only; a body it cannot map raises UnmappableError.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Documented: epoch numbers below 1e11 are seconds, larger ones milliseconds.
SECONDS_BELOW = 100_000_000_000
# The event time of a message stamped by Pub/Sub on arrival (--missing_event_time=publish_time):
# the exact instant is known only to Pub/Sub; verify accepts the publish window it measured.
PUBLISH_TIME = -1


class UnmappableError(ValueError):
    """The body is not a well-formed message of its schema (the oracle predicts no row)."""


@dataclass(frozen=True, slots=True)
class ExpectedRow:
    """A row key, its cells ("family:qualifier" -> text) and the cell timestamp (micros)."""

    table_group: str
    row_key: str
    timestamp_micros: int  # PUBLISH_TIME: the message's publish time
    cells: dict[str, str]


def compact(value: object) -> str:
    """JSON as the cells hold it: no spaces, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def rfc3339_millis(moment: datetime) -> str:
    """2026-11-24T06:40:53.123Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def millis_of(moment: datetime) -> int:
    """Whole milliseconds since the epoch (truncated)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def event_time(value: Any) -> datetime:
    """An RFC 3339 text with an offset, or epoch seconds/milliseconds as a JSON number."""
    if isinstance(value, bool):
        raise UnmappableError("a boolean is not a time")
    if isinstance(value, int | float):
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        millis = exact * 1000 if exact < SECONDS_BELOW else exact
        return EPOCH + timedelta(milliseconds=int(millis))
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UnmappableError(f"not a timestamp: {value!r}") from None
        if moment.tzinfo is None:
            raise UnmappableError(f"no offset: {value!r}")
        return moment.astimezone(UTC)
    raise UnmappableError(f"not a timestamp: {value!r}")


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise UnmappableError(f"no {name}")
    return body[name]


def _consent_key(body: dict[str, Any]) -> str:
    domain, user = _field(body, "domain"), _field(body, "user")
    if not isinstance(domain, str) or not isinstance(user, str):
        raise UnmappableError("domain and user must be text")
    try:
        canonical = uuid.UUID(user.strip())
    except ValueError:
        raise UnmappableError(f"not a uuid: {user!r}") from None
    return f"{domain.strip().lower().removesuffix('.')}#{canonical}"


def _when(body: dict[str, Any], field: str, publish_time: bool) -> tuple[int, str | None]:
    """(cell timestamp micros, the time's cell text) of the body's event-time field."""
    value = body.get(field)
    if value is None:
        if not publish_time:
            raise UnmappableError(f"no {field}")
        return PUBLISH_TIME, None
    moment = event_time(value)
    return millis_of(moment) * 1000, rfc3339_millis(moment)


def _ids(services: Any) -> list[str]:
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise UnmappableError("services must be a list of ids")
    return [s.strip() for s in services]


def consent_row(schema: str, body: dict[str, Any], publish_time: bool = False) -> ExpectedRow:
    """consent.v1 / consent.v2. `publish_time`: an absent time becomes the publish time."""
    key = _consent_key(body)
    micros, stamp = _when(body, "message_timestamp", publish_time)
    services = _field(body, "services")
    cells: dict[str, str] = {}
    if schema == "consent.v1":
        cells["cf1:services"] = compact(_ids(services))
    elif schema == "consent.v2":
        if not isinstance(services, list) or not all(isinstance(g, dict) for g in services):
            raise UnmappableError("v2 services must be a list of {id, granted}")
        detail = [{"granted": g.get("granted"), "id": g.get("id")} for g in services]
        cells["cf1:services"] = compact([g["id"] for g in detail if g["granted"] is True])
        cells["cf1:services_detail"] = compact(detail)
        cells["cf1:region"] = str(_field(body, "region"))
    else:
        raise UnmappableError(f"not a consent schema: {schema}")
    if stamp is not None:
        cells["cf1:message_timestamp"] = stamp
    return ExpectedRow("consent", key, micros, cells)


def telemetry_row(body: dict[str, Any]) -> ExpectedRow:
    """telemetry.v1."""
    device = _field(body, "device_id")
    readings = _field(body, "readings")
    if not isinstance(device, str) or not isinstance(readings, dict):
        raise UnmappableError("device_id must be text and readings an object")
    micros, stamp = _when(body, "recorded_at", publish_time=False)
    cells = {"m:firmware": str(_field(body, "firmware")), "m:recorded_at": str(stamp)}
    for name, value in readings.items():
        cells[f"r:{name}"] = repr(float(value))
    return ExpectedRow("telemetry", f"{device}#{micros // 1000:013d}", micros, cells)


def expected_row(schema: str, body: dict[str, Any], publish_time: bool = False) -> ExpectedRow:
    """The row a well-formed body of `schema` becomes; raises UnmappableError otherwise."""
    if schema.startswith("telemetry."):
        return telemetry_row(body)
    return consent_row(schema, body, publish_time)
