"""`python -m stream.lookup`: print the stored consent of one row, for people or as JSON."""

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from google.cloud.bigtable.data import BigtableDataClient

from stream.lookup.read import (
    DEFAULT_INSTANCE,
    DEFAULT_TABLE,
    V2_ONLY,
    InvalidInputError,
    NoConsentError,
    ReadFailedError,
    default_project,
    lookup_record,
    row_key,
)
from stream.names import BIGTABLE_ENV, LOCAL_PROJECT

DESCRIPTION = """\
Look up the stored consent of one `domain#user` row (`python -m stream.lookup --help`).

Reads the newest version of every `cf1` column with Bigtable's data client (the emulator when
BIGTABLE_EMULATOR_HOST is set) and prints services, message_timestamp and the cell timestamp,
plus a v2 event's region and services_detail. A v1 event newer than a v2 one leaves those two
columns at the older event's timestamp: they are then reported as belonging to an older event.

Exit codes: 0 found, 1 no such row, 2 invalid input or refused target, 3 Bigtable error.
"""

EXIT_FOUND, EXIT_ABSENT, EXIT_INVALID, EXIT_ERROR = 0, 1, 2, 3
LABEL_WIDTH = 18


class LookupFailedError(Exception):
    """A lookup that cannot proceed; carries the process exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; --project stays None unless given (see `target_project`)."""
    parser = argparse.ArgumentParser(prog="python -m stream.lookup", description=DESCRIPTION)
    parser.add_argument("--domain", required=True, help="e.g. example.com (case-insensitive)")
    parser.add_argument("--user", required=True, help="the user's UUID")
    parser.add_argument("--project", default=None, help=f"default: {LOCAL_PROJECT} (emulator)")
    parser.add_argument("--instance", default=DEFAULT_INSTANCE)
    parser.add_argument("--table", default=DEFAULT_TABLE)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for the read")
    return parser.parse_args(argv)


def target_project(explicit: str | None, environ: dict[str, str]) -> str:
    """The project to read; refuse the local default outside the emulator."""
    project = explicit or default_project(environ)
    if project:
        return project
    raise LookupFailedError(
        f"{BIGTABLE_ENV} is not set and no --project was given: set {BIGTABLE_ENV}=host:port "
        "to read the local emulator, or pass --project explicitly to read Bigtable in GCP",
        EXIT_INVALID,
    )


def _key(domain: str, user: str) -> str:
    try:
        return row_key(domain, user)
    except InvalidInputError as exc:
        problems = "; ".join(f"--{p.parameter}={p.value!r}: {p.reason}" for p in exc.problems)
        raise LookupFailedError(f"invalid input: {problems}", EXIT_INVALID) from None


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
    key = _key(args.domain, args.user)
    project = target_project(args.project, environ)
    where = f"{project}/{args.instance}/{args.table}"
    with (
        BigtableDataClient(project=project) as client,
        client.get_table(args.instance, args.table) as table,
    ):
        try:
            return lookup_record(table, key, args.timeout)
        except NoConsentError as exc:
            message = str(exc) if exc.row_exists else f"no row {key} in {where}"
            raise LookupFailedError(message, EXIT_ABSENT) from None
        except ReadFailedError as exc:
            message = f"reading {key!r} from {where} failed: {exc}"
            raise LookupFailedError(message, EXIT_ERROR) from exc


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
