"""The lookup HTTP function over real HTTP (functions-framework) on the Bigtable emulator."""

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest

from loadgen.lookup_server import LookupServer
from schemas.consent import ConsentV1, ConsentV2
from stream.local.emulators import Emulators, free_port
from stream.names import BIGTABLE_ENV
from tests.emulator.test_lookup import DETAIL, V1_JSON, V1_MICROS, V2_JSON, V2_MICROS, write
from tests.helpers.resources import PROJECT, TestResources, new_resources

pytestmark = [pytest.mark.emulator]

# Signs of internals that must never reach a caller.
LEAKS = ("Traceback", 'File "', ".py", "/work", "site-packages", "projects/", PROJECT, "inst-")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, query: dict[str, str] | str = "", method: str = "GET") -> Answer:
    text = query if isinstance(query, str) else urllib.parse.urlencode(query)
    request = urllib.request.Request(f"{url}/?{text}", method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


def assert_json_headers(answer: Answer) -> None:
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def assert_no_internals(answer: Answer) -> None:
    text = answer.body.decode()
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {text}"


def new_user() -> str:
    return str(uuid.uuid4())


def event(source: str, **changes: Any) -> str:
    """The JSON message `source` with some fields replaced (a fresh user per test)."""
    return json.dumps({**json.loads(source), **changes})


@pytest.fixture(scope="module")
def table(emulators: Emulators) -> TestResources:
    """Tables shared by this module's tests; each test writes rows of its own users."""
    return new_resources()


@pytest.fixture(scope="module")
def server(table: TestResources) -> Iterator[LookupServer]:
    with LookupServer(PROJECT, table.instance, table.table("consent")) as running:
        yield running


@pytest.fixture(scope="module")
def no_table(emulators: Emulators) -> Iterator[LookupServer]:
    """A function configured for an instance that does not exist: any read fails."""
    with LookupServer(PROJECT, "no-such-instance", "no-such-table") as running:
        yield running


def test_v1_row(table: TestResources, server: LookupServer) -> None:
    user = new_user()
    write(table, ConsentV1.model_validate_json(event(V1_JSON, user=user)))

    answer = call(server.url, {"domain": "example.com", "user": user})

    assert answer.status == 200
    assert_json_headers(answer)
    assert answer.json() == {
        "row_key": f"example.com#{user}",
        "services": ["essential-1", "marketing-5"],
        "message_timestamp": "2026-11-24T06:40:53.123Z",
        "cell_timestamp": "2026-11-24T06:40:53.123Z",
        "cell_timestamp_micros": V1_MICROS,
        "region": None,
        "services_detail": None,
        "older_columns": {},
    }


def test_v2_row(table: TestResources, server: LookupServer) -> None:
    user = new_user()
    write(table, ConsentV2.model_validate_json(event(V2_JSON, user=user)))

    answer = call(server.url, {"domain": "example.com", "user": user})

    assert (answer.status, answer.json()) == (
        200,
        {
            "row_key": f"example.com#{user}",
            "services": ["essential-1"],
            "message_timestamp": "2026-11-24T06:40:50.000Z",
            "cell_timestamp": "2026-11-24T06:40:50.000Z",
            "cell_timestamp_micros": V2_MICROS,
            "region": "eu",
            "services_detail": DETAIL,
            "older_columns": {},
        },
    )


def test_domain_is_case_insensitive(table: TestResources, server: LookupServer) -> None:
    user = new_user()
    write(table, ConsentV1.model_validate_json(event(V1_JSON, user=user, domain="example.com")))

    answer = call(server.url, {"domain": "Example.COM", "user": user.upper()})

    assert answer.status == 200
    assert answer.json()["row_key"] == f"example.com#{user}"


def test_head_answers_headers_only(table: TestResources, server: LookupServer) -> None:
    user = new_user()
    write(table, ConsentV1.model_validate_json(event(V1_JSON, user=user)))

    answer = call(server.url, {"domain": "example.com", "user": user}, method="HEAD")

    assert (answer.status, answer.body) == (200, b"")
    assert_json_headers(answer)


def test_absent_row(server: LookupServer) -> None:
    user = new_user()

    answer = call(server.url, {"domain": "example.com", "user": user})

    assert answer.status == 404
    assert_json_headers(answer)
    assert answer.json() == {
        "error": "no consent stored for this domain and user",
        "row_key": f"example.com#{user}",
    }


USER = "0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11"
PATTERN = "String should match pattern"
BAD_INPUT = {
    "missing domain": (f"user={USER}", [{"parameter": "domain", "reason": "missing"}]),
    "missing user": ("domain=example.com", [{"parameter": "user", "reason": "missing"}]),
    "missing both": ("", [{"parameter": p, "reason": "missing"} for p in ("domain", "user")]),
    "user twice": (
        f"domain=example.com&user={USER}&user={USER}",
        [{"parameter": "user", "reason": "given more than once"}],
    ),
    "invalid uuid": (
        "domain=example.com&user=not-a-uuid",
        [{"parameter": "user", "value": "not-a-uuid", "reason": "Input should be a valid UUID"}],
    ),
    "space in domain": (
        f"domain=a%20b&user={USER}",
        [{"parameter": "domain", "value": "a b", "reason": PATTERN}],
    ),
    "key separator in domain": (
        f"domain=x%23y&user={USER}",
        [{"parameter": "domain", "value": "x#y", "reason": PATTERN}],
    ),
    "another user's key": (
        f"domain=example.com%23{USER}&user={USER}",
        [{"parameter": "domain", "value": f"example.com#{USER}"[:32] + "...", "reason": PATTERN}],
    ),
    "overlong domain": (
        f"domain={'a' * 5000}.com&user={USER}",
        [{"parameter": "domain", "value": "a" * 32 + "...", "reason": "at most 253 characters"}],
    ),
    "overlong user": (
        f"domain=example.com&user={'0' * 100_000}",
        [{"parameter": "user", "value": "0" * 32 + "...", "reason": "valid UUID"}],
    ),
    "non-ascii domain": (
        f"domain=b%C3%BCcher.de&user={USER}",
        [{"parameter": "domain", "value": "bücher.de", "reason": "must be ASCII"}],
    ),
}


def assert_refused(answer: Answer, expected: list[dict[str, str]]) -> None:
    assert answer.status == 400, answer.body
    assert_json_headers(answer)
    assert_no_internals(answer)
    assert len(answer.body) < 1000  # never the whole input back
    body = answer.json()
    assert body["error"] == "invalid input"
    problems = body["problems"]
    assert [(p["parameter"], p.get("value")) for p in problems] == [
        (e["parameter"], e.get("value")) for e in expected
    ]
    for problem, want in zip(problems, expected, strict=True):
        assert want["reason"] in problem["reason"]


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused(server: LookupServer, case: str) -> None:
    query, expected = BAD_INPUT[case]

    assert_refused(call(server.url, query), expected)


@pytest.mark.parametrize("case", ["missing domain", "invalid uuid", "key separator in domain"])
def test_bad_input_is_refused_before_bigtable_is_asked(no_table: LookupServer, case: str) -> None:
    query, expected = BAD_INPUT[case]

    assert_refused(call(no_table.url, query), expected)


def test_bigtable_failure_is_a_generic_503(no_table: LookupServer) -> None:
    answer = call(no_table.url, {"domain": "example.com", "user": USER})

    assert answer.status == 503
    assert_json_headers(answer)
    assert_no_internals(answer)
    assert answer.json() == {"error": "the consent store could not be read; try again later"}
    # The cause is logged where operators look, not sent to the caller.
    log = no_table.output()
    assert "reading the consent table failed" in log
    assert 'table "projects/test-project/instances/no-such-instance/tables/no-such-table"' in log


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_not_allowed(server: LookupServer, method: str) -> None:
    answer = call(server.url, {"domain": "example.com", "user": USER}, method=method)

    assert answer.status == 405
    assert answer.headers["Allow"] == "GET, HEAD"
    assert_json_headers(answer)
    assert answer.json() == {"error": f"method {method} not allowed; use GET"}


def test_refuses_to_serve_without_a_project_outside_the_emulator(emulators: Emulators) -> None:
    env = {BIGTABLE_ENV: None, "LOOKUP_PROJECT": None}
    with LookupServer(None, "scale-bigtable", "scale-traffic", env=env) as unconfigured:
        answer = call(unconfigured.url, {"domain": "example.com", "user": USER})
        log = unconfigured.output()

    assert answer.status == 500
    assert_json_headers(answer)
    assert answer.json() == {"error": "internal error"}
    assert "set LOOKUP_PROJECT=<project id>" in log
    assert "BIGTABLE_EMULATOR_HOST=host:port" in log


def test_unreachable_bigtable_is_a_generic_503(emulators: Emulators) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: every attempt is refused
    env = {BIGTABLE_ENV: closed, "LOOKUP_TIMEOUT_SECONDS": "1"}
    with LookupServer(PROJECT, "scale-bigtable", "scale-traffic", env=env) as unreachable:
        answer = call(unreachable.url, {"domain": "example.com", "user": USER})

    assert answer.status == 503
    assert_no_internals(answer)
    assert answer.json() == {"error": "the consent store could not be read; try again later"}
