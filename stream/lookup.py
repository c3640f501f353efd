"""Look up the stored consent of one `domain#user` row (`python -m stream.lookup --help`).

Reads the newest version of every `cf1` column with Bigtable's data client (the emulator when
BIGTABLE_EMULATOR_HOST is set) and prints services, message_timestamp and the cell timestamp,
plus a v2 event's region and services_detail. A v1 event newer than a v2 one leaves those two
columns at the older event's timestamp: they are then reported as belonging to an older event.

Exit codes: 0 found, 1 no such row, 2 invalid input or refused target, 3 Bigtable error.
"""

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.bigtable.data import BigtableDataClient, Row
from google.cloud.bigtable.data.row_filters import CellsColumnLimitFilter
from pydantic import ValidationError

from schemas.base import Column, Encoding, format_rfc3339_millis
from schemas.consent import CONSENT_TABLE, FAMILY, ConsentV1, ConsentV2
from stream.config import LOCAL_INSTANCE, LOCAL_PROJECT
from stream.emulators import BIGTABLE_ENV

EXIT_FOUND, EXIT_ABSENT, EXIT_INVALID, EXIT_ERROR = 0, 1, 2, 3
COLUMNS: dict[str, Column] = {column.qualifier: column for column in ConsentV2.columns}
CURRENT = ("services", "message_timestamp")  # written by every consent version
V2_ONLY = tuple(q for q in COLUMNS if q not in CURRENT)  # services_detail, region
LABEL_WIDTH = 18


class LookupFailedError(Exception):
    """A lookup that cannot proceed; carries the process exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class StoredCell:
    """The newest version of one column: decoded value and cell timestamp (micros)."""

    value: Any
    timestamp_micros: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; --project stays None unless given (see `target_project`)."""
    parser = argparse.ArgumentParser(prog="python -m stream.lookup", description=__doc__)
    parser.add_argument("--domain", required=True, help="e.g. example.com (case-insensitive)")
    parser.add_argument("--user", required=True, help="the user's UUID")
    parser.add_argument("--project", default=None, help=f"default: {LOCAL_PROJECT} (emulator)")
    parser.add_argument("--instance", default=LOCAL_INSTANCE)
    parser.add_argument("--table", default=CONSENT_TABLE.default_table_id)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for the read")
    return parser.parse_args(argv)


def target_project(explicit: str | None, environ: dict[str, str]) -> str:
    """The project to read; refuse the local default outside the emulator."""
    if explicit:
        return explicit
    if environ.get(BIGTABLE_ENV):
        return LOCAL_PROJECT
    raise LookupFailedError(
        f"{BIGTABLE_ENV} is not set and no --project was given: set {BIGTABLE_ENV}=host:port "
        "to read the local emulator, or pass --project explicitly to read Bigtable in GCP",
        EXIT_INVALID,
    )


def row_key(domain: str, user: str) -> str:
    """The schema's own row key (`domain#user`, domain lower-cased), validated as on ingest."""
    # Validate a minimal consent event, so the key comes from the model's validators and
    # row_key(), not from a copy of them; only `domain` and `user` can fail here.
    body = {"user": user, "domain": domain, "services": [], "message_timestamp": 0}
    try:
        return ConsentV1.model_validate_json(json.dumps(body)).row_key()
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc']))}={e['input']!r}: {e['msg']}" for e in exc.errors()
        )
        raise LookupFailedError(f"invalid input: {problems}", EXIT_INVALID) from None


def decode(value: bytes, encoding: Encoding) -> Any:
    """Inverse of schemas.base.encode for the consent columns."""
    text = value.decode()
    return json.loads(text) if encoding is Encoding.JSON else text


def read_cells(project: str, instance: str, table: str, key: str, timeout: float) -> Row | None:
    """The row's newest cell per column, or None when the row does not exist."""
    with BigtableDataClient(project=project) as client, client.get_table(instance, table) as t:
        try:
            return t.read_row(key, row_filter=CellsColumnLimitFilter(1), operation_timeout=timeout)
        except gexc.GoogleAPIError as exc:
            raise LookupFailedError(
                f"reading {key!r} from {project}/{instance}/{table} failed: {exc}", EXIT_ERROR
            ) from exc


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
    """The stored consent as a plain dict (what --json prints).

    `region` and `services_detail` are set only when they belong to the same event as
    `services` (same cell timestamp); otherwise they are listed under `older_columns`.
    """
    if "services" not in columns:
        raise LookupFailedError(f"row {key} exists but has no {FAMILY}:services cell", EXIT_ABSENT)
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


def _line(label: str, text: str) -> str:
    return f"{label.ljust(LABEL_WIDTH)}{text}"


def _detail_text(detail: list[dict[str, Any]]) -> str:
    return ", ".join(f"{g['id']} {'granted' if g['granted'] else 'denied'}" for g in detail)


def _value_text(qualifier: str, value: Any) -> str:
    return _detail_text(value) if qualifier == "services_detail" else str(value)


def render(record: dict[str, Any]) -> str:
    """The record for people: one `label  value` line per field."""
    lines = [
        _line("row", record["row_key"]),
        _line("services", ", ".join(record["services"]) or "(none)"),
        _line("message_timestamp", str(record["message_timestamp"])),
        _line(
            "cell timestamp",
            f"{record['cell_timestamp']} ({record['cell_timestamp_micros']} us)",
        ),
    ]
    for qualifier in V2_ONLY:
        if record[qualifier] is not None:
            lines.append(_line(qualifier, _value_text(qualifier, record[qualifier])))
    for qualifier, older in record["older_columns"].items():
        lines.append(
            _line(
                qualifier,
                f"{_value_text(qualifier, older['value'])} (belongs to an older event, "
                f"cell timestamp {older['cell_timestamp']}; not part of this consent)",
            )
        )
    return "\n".join(lines)


def lookup(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    """Validate, read and decode; raise LookupFailedError (with its exit code) otherwise."""
    key = row_key(args.domain, args.user)
    project = target_project(args.project, environ)
    row = read_cells(project, args.instance, args.table, key, args.timeout)
    if row is None:
        raise LookupFailedError(
            f"no row {key} in {project}/{args.instance}/{args.table}", EXIT_ABSENT
        )
    return consent_record(key, stored_columns(row))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lookup; return the process exit code."""
    args = parse_args(argv)
    # The client warns on every emulator connection; the target is explicit here already.
    warnings.filterwarnings("ignore", "Connecting to Bigtable emulator", RuntimeWarning)
    try:
        record = lookup(args, dict(os.environ))
    except LookupFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(record, sort_keys=True) if args.json else render(record))
    return EXIT_FOUND


if __name__ == "__main__":
    sys.exit(main())
