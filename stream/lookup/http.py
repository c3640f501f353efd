"""The consent lookup as an HTTP Cloud Function: `GET /?domain=<d>&user=<uuid>` -> JSON."""

# Serve it through stream/lookup/main.py (the bundle's main.py), never `--source=` this file:
# functions-framework registers a source file as a top-level module named after the file, and
# `http` would replace the standard library's http package in sys.modules.

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import flask
import functions_framework
from google.cloud.bigtable.data import BigtableDataClient, Table

from stream.lookup.read import (
    DEFAULT_INSTANCE,
    DEFAULT_TABLE,
    InvalidInputError,
    NoConsentError,
    Problem,
    ReadFailedError,
    default_project,
    lookup_record,
    row_key,
)
from stream.names import BIGTABLE_ENV

PROJECT_ENV, INSTANCE_ENV, TABLE_ENV = "LOOKUP_PROJECT", "LOOKUP_INSTANCE", "LOOKUP_TABLE"
TIMEOUT_ENV = "LOOKUP_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 25.0  # inside the 30 s request timeout infra/lookup deploys with
PARAMETERS = ("domain", "user")
ALLOWED_METHODS = ("GET", "HEAD")
MAX_ECHO = 32  # characters of a refused value repeated in the answer
MAX_REASON = 200
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
NOT_FOUND = "no consent stored for this domain and user"
UNAVAILABLE = "the consent store could not be read; try again later"
INTERNAL = "internal error"

_LOG = logging.getLogger(__name__)


class NotConfiguredError(Exception):
    """Neither LOOKUP_PROJECT nor BIGTABLE_EMULATOR_HOST is set: no table to read."""


@dataclass(frozen=True, slots=True)
class Target:
    """The consent table this function instance reads."""

    project: str
    instance: str
    table: str
    timeout: float


def _timeout(environ: Mapping[str, str]) -> float:
    text = environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise NotConfiguredError(
            f"refusing to serve: {TIMEOUT_ENV}={text!r} is not a number of seconds in "
            f"(0, {MAX_TIMEOUT_SECONDS:g}]"
        )
    return seconds


def target_from(environ: Mapping[str, str]) -> Target:
    """The table from LOOKUP_*; the emulator's project only when BIGTABLE_EMULATOR_HOST is set."""
    project = environ.get(PROJECT_ENV) or default_project(environ)
    if not project:
        raise NotConfiguredError(
            f"refusing to serve: set {PROJECT_ENV}=<project id> to read Bigtable in GCP, or "
            f"{BIGTABLE_ENV}=host:port to read the emulator"
        )
    instance = environ.get(INSTANCE_ENV) or DEFAULT_INSTANCE
    table = environ.get(TABLE_ENV) or DEFAULT_TABLE
    return Target(project, instance, table, _timeout(environ))


class _TableHolder:
    """One data client and table per function instance, created at the first request.

    Lazily, not at import: the configuration is read when serving, and gunicorn may fork
    after importing the module (a gRPC channel does not survive a fork).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: tuple[Table, float] | None = None

    def get(self) -> tuple[Table, float]:
        """The table and the read timeout in seconds."""
        with self._lock:
            if self._table is None:
                target = target_from(os.environ)
                client = BigtableDataClient(project=target.project)
                self._table = client.get_table(target.instance, target.table), target.timeout
                _LOG.info("consent lookup reads %s", target)
            return self._table


_TABLE = _TableHolder()


def answer(status: HTTPStatus, body: dict[str, Any], **headers: str) -> flask.Response:
    """A JSON response with the headers every answer carries (personal data: never cached)."""
    return flask.Response(
        json.dumps(body, sort_keys=True),
        status=status,
        mimetype="application/json",
        headers={**HEADERS, **headers},
    )


def _capped(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _problem(parameter: str, reason: str, value: Any = None) -> dict[str, str]:
    problem = {"parameter": parameter, "reason": _capped(reason, MAX_REASON)}
    if value is not None:
        problem["value"] = _capped(value, MAX_ECHO)
    return problem


def _refused(problems: list[dict[str, str]]) -> flask.Response:
    return answer(HTTPStatus.BAD_REQUEST, {"error": "invalid input", "problems": problems})


def requested_key(args: Mapping[str, list[str]]) -> str:
    """The row key of `?domain=&user=` (each exactly once), validated by the consent model."""
    problems = [
        Problem(name, None, "missing" if not args.get(name) else "given more than once")
        for name in PARAMETERS
        if len(args.get(name, [])) != 1
    ]
    if problems:
        raise InvalidInputError(tuple(problems))
    return row_key(args["domain"][0], args["user"][0])


@functions_framework.http
def lookup_consent(request: flask.Request) -> flask.Response:
    """Answer the newest stored consent of `domain#user` as JSON; only ever reads."""
    if request.method not in ALLOWED_METHODS:
        body = {"error": f"method {_capped(request.method, 10)} not allowed; use GET"}
        return answer(HTTPStatus.METHOD_NOT_ALLOWED, body, Allow=", ".join(ALLOWED_METHODS))
    try:
        key = requested_key(request.args.to_dict(flat=False))
    except InvalidInputError as exc:
        return _refused([_problem(p.parameter, p.reason, p.value) for p in exc.problems])
    try:
        table, timeout = _TABLE.get()
        record = lookup_record(table, key, timeout)
    except NoConsentError:
        return answer(HTTPStatus.NOT_FOUND, {"error": NOT_FOUND, "row_key": key})
    except NotConfiguredError as exc:
        _LOG.error("%s", exc)  # says what to set; a traceback would add nothing
        return answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": INTERNAL})
    except ReadFailedError:
        _LOG.exception("reading the consent table failed")
        return answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": UNAVAILABLE})
    except Exception:
        # The framework's own handler would answer with the exception's text.
        _LOG.exception("consent lookup failed")
        return answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": INTERNAL})
    return answer(HTTPStatus.OK, record)
