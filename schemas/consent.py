"""Consent-request events: v1 (the seed format) and v2 (per-service grants and a region)."""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.base import (
    Column,
    Encoding,
    MappedEvent,
    TableSpec,
    format_rfc3339_millis,
    parse_event_time,
)

FAMILY = "cf1"
CONSENT_TABLE = TableSpec(group="consent", default_table_id="scale-traffic", families=(FAMILY,))

# A DNS name: labels of letters, digits and inner hyphens, at least one dot, <= 253 chars.
DOMAIN_PATTERN = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
# Service ids look like `essential-1`, `analytics-12`, `marketing-5`.
SERVICE_ID_PATTERN = r"^[a-z][a-z0-9]{0,31}-[0-9]{1,4}$"
MAX_SERVICES = 64

Domain = Annotated[str, Field(max_length=253, pattern=DOMAIN_PATTERN)]
ServiceId = Annotated[str, Field(pattern=SERVICE_ID_PATTERN)]


def _no_duplicates(ids: list[str]) -> None:
    seen: set[str] = set()
    for service in ids:
        if service in seen:
            raise ValueError(f"service {service!r} is listed twice")
        seen.add(service)


class _ConsentBase(MappedEvent):
    """Fields and row mapping shared by every consent version: row key `domain#user`."""

    table = CONSENT_TABLE

    user: UUID
    domain: Domain
    message_timestamp: datetime

    @field_validator("domain", mode="before")
    @classmethod
    def _lowercase_domain(cls, value: Any) -> Any:
        # ASCII only: str.lower() maps e.g. the Kelvin sign to "k", which would pass.
        return value.lower() if isinstance(value, str) and value.isascii() else value

    @field_validator("message_timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any) -> datetime:
        return parse_event_time(value)

    def row_key(self) -> str:
        """`domain#user`, the seed product's key: all users of a domain are contiguous."""
        return f"{self.domain}#{self.user}"

    def event_time(self) -> datetime:
        """The producer's `message_timestamp`."""
        return self.message_timestamp


class ConsentV1(_ConsentBase):
    """`{"user", "domain", "services": [id, ...], "message_timestamp"}` exactly as the seed."""

    schema_name = "consent.v1"
    columns = (
        Column(FAMILY, "services", Encoding.JSON),
        Column(FAMILY, "message_timestamp", Encoding.TEXT),
    )

    services: Annotated[list[ServiceId], Field(max_length=MAX_SERVICES)]

    @field_validator("services")
    @classmethod
    def _unique_services(cls, value: list[str]) -> list[str]:
        _no_duplicates(value)
        return value

    def column_values(self) -> dict[str, Any]:
        """`services` as a JSON list; `message_timestamp` as RFC 3339 with milliseconds."""
        return {
            "services": self.services,
            "message_timestamp": format_rfc3339_millis(self.message_timestamp),
        }


class ServiceGrant(BaseModel):
    """One service decision in a v2 request."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: ServiceId
    granted: bool


class ConsentV2(_ConsentBase):
    """v2: per-service `{id, granted}` decisions and a `region`.

    Stored in the same table as v1 without breaking v1 readers: `services` still holds the
    JSON list of granted ids; the full decisions go to `services_detail`, plus `region`.
    """

    schema_name = "consent.v2"
    columns = (
        Column(FAMILY, "services", Encoding.JSON),
        Column(FAMILY, "message_timestamp", Encoding.TEXT),
        Column(FAMILY, "services_detail", Encoding.JSON),
        Column(FAMILY, "region", Encoding.TEXT),
    )

    services: Annotated[list[ServiceGrant], Field(max_length=MAX_SERVICES)]
    region: Literal["eu", "us", "apac", "latam", "mea"]

    @field_validator("services")
    @classmethod
    def _unique_services(cls, value: list[ServiceGrant]) -> list[ServiceGrant]:
        _no_duplicates([grant.id for grant in value])
        return value

    def column_values(self) -> dict[str, Any]:
        """v1-compatible `services` (granted ids) plus the v2-only columns."""
        return {
            "services": [grant.id for grant in self.services if grant.granted],
            "message_timestamp": format_rfc3339_millis(self.message_timestamp),
            "services_detail": [grant.model_dump() for grant in self.services],
            "region": self.region,
        }
