"""Message builders shared by the tests: consent and telemetry bodies, as producers send them."""

import json
import uuid
from datetime import datetime
from typing import Any

from stream.pipeline.messages import RawMessage


def consent_body(
    user: str | uuid.UUID | None = None,
    domain: str = "example.com",
    services: list[str] | None = None,
    when: datetime | int | str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A consent.v1 body (the seed's shape); `when` None leaves out message_timestamp."""
    body: dict[str, Any] = {
        "user": str(user if user is not None else uuid.uuid4()),
        "domain": domain,
        "services": ["essential-1"] if services is None else services,
    }
    if when is not None:
        body["message_timestamp"] = when.isoformat() if isinstance(when, datetime) else when
    body.update(extra)
    return body


def telemetry_body(
    device: str = "sensor-1",
    when: datetime | int | str = 0,
    readings: dict[str, float] | None = None,
    firmware: str = "1.0.0",
) -> dict[str, Any]:
    """A telemetry.v1 body."""
    return {
        "device_id": device,
        "recorded_at": when.isoformat() if isinstance(when, datetime) else when,
        "readings": {"temp_c": 21.5} if readings is None else readings,
        "firmware": firmware,
    }


def encoded(body: dict[str, Any]) -> bytes:
    """The body as a producer publishes it (json.dumps, default separators)."""
    return json.dumps(body).encode()


def raw(body: dict[str, Any] | bytes, **fields: Any) -> RawMessage:
    """A RawMessage of the body; `fields` are RawMessage's (attributes, message_id, ...)."""
    data = body if isinstance(body, bytes) else encoded(body)
    return RawMessage(data=data, **fields)
