"""Validate domain/user into the row key, read the row and decode it (shared by CLI and HTTP)."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import Row, Table
from google.cloud.bigtable.data.row_filters import CellsColumnLimitFilter
from pydantic import ValidationError

from schemas.base import Column, Encoding, format_rfc3339_millis
from schemas.consent import CONSENT_TABLE, FAMILY, ConsentV1, ConsentV2
from stream.names import BIGTABLE_ENV, LOCAL_INSTANCE, LOCAL_PROJECT

DEFAULT_INSTANCE = LOCAL_INSTANCE
DEFAULT_TABLE = CONSENT_TABLE.default_table_id

COLUMNS: dict[str, Column] = {column.qualifier: column for column in ConsentV2.columns}
CURRENT = ("services", "message_timestamp")  # written by every consent version
V2_ONLY = tuple(q for q in COLUMNS if q not in CURRENT)  # services_detail, region


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one input was refused: the parameter, the value given and the model's reason."""

    parameter: str
    value: Any
    reason: str


class InvalidInputError(Exception):
    """The domain or user does not pass the consent model's validators."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("; ".join(f"{p.parameter}: {p.reason}" for p in problems))
        self.problems = problems


class NoConsentError(Exception):
    """No row under the key, or a row without a `cf1:services` cell."""

    def __init__(self, message: str, *, row_exists: bool) -> None:
        super().__init__(message)
        self.row_exists = row_exists


class ReadFailedError(Exception):
    """Bigtable answered the read with an error (the cause is chained)."""


@dataclass(frozen=True, slots=True)
class StoredCell:
    """The newest version of one column: decoded value and cell timestamp (micros)."""

    value: Any
    timestamp_micros: int


def default_project(environ: Mapping[str, str]) -> str | None:
    """The emulator's project when BIGTABLE_EMULATOR_HOST is set; None means "ask for one"."""
    return LOCAL_PROJECT if environ.get(BIGTABLE_ENV) else None


def row_key(domain: str, user: str) -> str:
    """The schema's own row key (`domain#user`, domain lower-cased), validated as on ingest."""
    # Validate a minimal consent event, so the key comes from the model's validators and
    # row_key(), not from a copy of them; only `domain` and `user` can fail here.
    body = {"user": user, "domain": domain, "services": [], "message_timestamp": 0}
    try:
        return ConsentV1.model_validate_json(json.dumps(body)).row_key()
    except ValidationError as exc:
        problems = tuple(
            Problem(".".join(map(str, e["loc"])), e["input"], e["msg"]) for e in exc.errors()
        )
        raise InvalidInputError(problems) from None


def read_row(table: Table, key: str, timeout: float) -> Row | None:
    """The row's newest cell per column, or None when the row does not exist."""
    try:
        return table.read_row(key, row_filter=CellsColumnLimitFilter(1), operation_timeout=timeout)
    except gexc.GoogleAPIError as exc:
        raise ReadFailedError(str(exc)) from exc


def decode(value: bytes, encoding: Encoding) -> Any:
    """Inverse of schemas.base.encode for the consent columns."""
    text = value.decode()
    return json.loads(text) if encoding is Encoding.JSON else text


def stored_columns(row: Row) -> dict[str, StoredCell]:
    """Decoded consent columns of the row (other families and qualifiers are ignored)."""
    columns: dict[str, StoredCell] = {}
    for cell in row.cells:
        qualifier = cell.qualifier.decode()
        if cell.family == FAMILY and qualifier in COLUMNS and qualifier not in columns:
            value = decode(cell.value, COLUMNS[qualifier].encoding)
            columns[qualifier] = StoredCell(value, cell.timestamp_micros)
    return columns


def rfc3339_from_micros(micros: int) -> str:
    """A cell timestamp as RFC 3339 UTC with milliseconds (Bigtable's granularity here)."""
    return format_rfc3339_millis(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros))


def consent_record(key: str, columns: dict[str, StoredCell]) -> dict[str, Any]:
    """The stored consent as a plain dict (what --json prints and the function answers).

    `region` and `services_detail` are set only when they belong to the same event as
    `services` (same cell timestamp); otherwise they are listed under `older_columns`.
    """
    if "services" not in columns:
        message = f"row {key} exists but has no {FAMILY}:services cell"
        raise NoConsentError(message, row_exists=True)
    services = columns["services"]
    timestamp = columns.get("message_timestamp")
    record: dict[str, Any] = {
        "row_key": key,
        "services": services.value,
        "message_timestamp": timestamp.value if timestamp else None,
        "cell_timestamp": rfc3339_from_micros(services.timestamp_micros),
        "cell_timestamp_micros": services.timestamp_micros,
        "region": None,
        "services_detail": None,
        "older_columns": {},
    }
    for qualifier in V2_ONLY:
        cell = columns.get(qualifier)
        if cell is None:
            continue
        if cell.timestamp_micros == services.timestamp_micros:
            record[qualifier] = cell.value
        else:
            record["older_columns"][qualifier] = {
                "value": cell.value,
                "cell_timestamp": rfc3339_from_micros(cell.timestamp_micros),
                "cell_timestamp_micros": cell.timestamp_micros,
            }
    return record


def lookup_record(table: Table, key: str, timeout: float) -> dict[str, Any]:
    """Read and decode the consent under `key`; NoConsentError or ReadFailedError otherwise."""
    row = read_row(table, key, timeout)
    if row is None:
        raise NoConsentError(f"no row {key}", row_exists=False)
    return consent_record(key, stored_columns(row))
