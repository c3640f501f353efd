"""Consent-request events: v1 (the seed format) and v2 (per-service grants and a region)."""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from schemas.base import (
    ABSENT,
    Column,
    Encoding,
    MappedEvent,
    TableSpec,
    ValidationContext,
    event_time_field,
    format_rfc3339_millis,
)

FAMILY = "cf1"
CONSENT_TABLE = TableSpec(group="consent", default_table_id="scale-traffic", families=(FAMILY,))

# A DNS name: labels of letters, digits and inner hyphens, at least one dot, <= 253 chars.
DOMAIN_PATTERN = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
# A service id is a category and a number: `essential-1`, `web_performance_and_analytics-3` (the
# seed's 25 ids), `ads-12`. The category is lower-case words joined by `_` or `-`.
SERVICE_ID_PATTERN = r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*-[0-9]{1,4}$"
MAX_SERVICE_ID = 64
MAX_SERVICES = 64
UNKNOWN_SERVICE_ERROR = "unknown_service"  # pydantic error type: an id outside the catalog

Domain = Annotated[str, Field(max_length=253, pattern=DOMAIN_PATTERN)]
ServiceId = Annotated[str, Field(max_length=MAX_SERVICE_ID, pattern=SERVICE_ID_PATTERN)]


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _stripped_ids(value: Any) -> Any:
    """Surrounding whitespace removed from each id (list items that are not text stay)."""
    if not isinstance(value, list):
        return value
    return [_stripped(item) for item in value]


def _check_ids(ids: list[str], info: ValidationInfo) -> None:
    """Each id once; with a service catalog in the context, every id in it."""
    seen: set[str] = set()
    for service in ids:
        if service in seen:
            raise ValueError(f"service {service!r} is listed twice")
        seen.add(service)
    context = info.context
    catalog = context.services if isinstance(context, ValidationContext) else None
    if catalog is not None:
        unknown = [service for service in ids if service not in catalog]
        if unknown:
            raise PydanticCustomError(
                UNKNOWN_SERVICE_ERROR,
                "unknown service {ids} (not in the service catalog of {size} ids)",
                {"ids": ", ".join(map(repr, unknown)), "size": len(catalog)},
            )


class _ConsentBase(MappedEvent):
    """Fields and row mapping shared by every consent version: row key `domain#user`."""

    table = CONSENT_TABLE
    row_key_shape = "domain#user"

    user: UUID
    domain: Domain
    message_timestamp: datetime = Field(default=ABSENT, validate_default=True)

    @field_validator("user", mode="before")
    @classmethod
    def _strip_user(cls, value: Any) -> Any:
        return _stripped(value)  # any UUID form pydantic reads; stored canonically (lower case)

    @field_validator("domain", mode="before")
    @classmethod
    def _normalise_domain(cls, value: Any) -> Any:
        """Whitespace and one trailing dot (`example.com.`) removed, lower-cased.

        ASCII only: Unicode names have several normalisations (IDNA 2003 maps `ß` to `ss`,
        IDNA 2008 keeps it; `str.lower()` maps the Kelvin sign to `k`), so one domain could
        become two keys or two domains one. Producers send the `xn--` form instead.
        """
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text.isascii():
            raise ValueError("must be ASCII; send an internationalised name in its xn-- form")
        text = text.lower()
        return text[:-1] if text.endswith(".") else text

    @field_validator("message_timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any, info: ValidationInfo) -> datetime:
        return event_time_field(value, info)

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

    @field_validator("services", mode="before")
    @classmethod
    def _strip_services(cls, value: Any) -> Any:
        return _stripped_ids(value)

    @field_validator("services")
    @classmethod
    def _known_services(cls, value: list[str], info: ValidationInfo) -> list[str]:
        _check_ids(value, info)
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

    @field_validator("id", mode="before")
    @classmethod
    def _strip_id(cls, value: Any) -> Any:
        return _stripped(value)


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
    def _known_services(cls, value: list[ServiceGrant], info: ValidationInfo) -> list[ServiceGrant]:
        _check_ids([grant.id for grant in value], info)
        return value

    def column_values(self) -> dict[str, Any]:
        """v1-compatible `services` (granted ids) plus the v2-only columns."""
        return {
            "services": [grant.id for grant in self.services if grant.granted],
            "message_timestamp": format_rfc3339_millis(self.message_timestamp),
            "services_detail": [grant.model_dump() for grant in self.services],
            "region": self.region,
        }
