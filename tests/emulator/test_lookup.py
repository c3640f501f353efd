"""`python -m stream.lookup` on the Bigtable emulator, reading rows mapped by the schemas."""

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from google.cloud.bigtable.data import BigtableDataClient, SetCell

from schemas.base import MappedEvent
from schemas.consent import ConsentV1, ConsentV2
from stream.names import BIGTABLE_ENV
from tests.helpers.resources import PROJECT, TestResources

pytestmark = [pytest.mark.emulator]

USER = "0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11"
V1_JSON = json.dumps(
    {
        "user": USER,
        "domain": "Example.COM",  # stored lower-cased: example.com#<user>
        "services": ["essential-1", "marketing-5"],
        "message_timestamp": "2026-11-24T06:40:53.123Z",
    }
)
V2_JSON = json.dumps(
    {
        "user": USER,
        "domain": "example.com",
        "services": [{"id": "essential-1", "granted": True}, {"id": "ads-2", "granted": False}],
        "region": "eu",
        "message_timestamp": "2026-11-24T06:40:50.000Z",  # older than V1_JSON
    }
)
V1_MICROS = 1_795_502_453_123_000  # 2026-11-24T06:40:53.123Z
V2_MICROS = 1_795_502_450_000_000  # 2026-11-24T06:40:50.000Z
KEY = f"example.com#{USER}"
DETAIL = [{"granted": True, "id": "essential-1"}, {"granted": False, "id": "ads-2"}]


def write(resources: TestResources, event: MappedEvent) -> None:
    """Store the event's row exactly as the mapping defines it (cells at the event time)."""
    with (
        BigtableDataClient(project=PROJECT) as client,
        client.get_table(resources.instance, resources.table("consent")) as table,
    ):
        ts = event.timestamp_micros()
        table.mutate_row(
            event.row_key(), [SetCell(c.family, c.qualifier, c.value, ts) for c in event.cells()]
        )


def lookup(
    resources: TestResources, *args: str, env: dict[str, str] | None = None, project: bool = True
) -> subprocess.CompletedProcess[str]:
    target = ["--instance", resources.instance, "--table", resources.table("consent")]
    if project:
        target += ["--project", PROJECT]
    return subprocess.run(
        [sys.executable, "-m", "stream.lookup", *target, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ) if env is None else env,
        timeout=60,
        check=False,
    )


def lines(*pairs: tuple[str, str]) -> str:
    return "".join(f"{label:<18}{value}\n" for label, value in pairs)


def v1_only(resources: TestResources) -> None:
    write(resources, ConsentV1.model_validate_json(V1_JSON))


def test_v1_row(resources: TestResources) -> None:
    v1_only(resources)

    done = lookup(resources, "--domain", "EXAMPLE.com", "--user", USER)

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == lines(
        ("row", KEY),
        ("services", "essential-1, marketing-5"),
        ("message_timestamp", "2026-11-24T06:40:53.123Z"),
        ("cell timestamp", f"2026-11-24T06:40:53.123Z ({V1_MICROS} us)"),
    )


def test_v1_row_as_json(resources: TestResources) -> None:
    v1_only(resources)

    done = lookup(resources, "--domain", "example.com", "--user", USER, "--json")

    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {
        "row_key": KEY,
        "services": ["essential-1", "marketing-5"],
        "message_timestamp": "2026-11-24T06:40:53.123Z",
        "cell_timestamp": "2026-11-24T06:40:53.123Z",
        "cell_timestamp_micros": V1_MICROS,
        "region": None,
        "services_detail": None,
        "older_columns": {},
    }


def test_v2_row(resources: TestResources) -> None:
    write(resources, ConsentV2.model_validate_json(V2_JSON))

    done = lookup(resources, "--domain", "example.com", "--user", USER)
    as_json = lookup(resources, "--domain", "example.com", "--user", USER, "--json")

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == lines(
        ("row", KEY),
        ("services", "essential-1"),  # the granted ids, as v1 readers expect
        ("message_timestamp", "2026-11-24T06:40:50.000Z"),
        ("cell timestamp", f"2026-11-24T06:40:50.000Z ({V2_MICROS} us)"),
        ("services_detail", "essential-1 granted, ads-2 denied"),
        ("region", "eu"),
    )
    assert (as_json.returncode, as_json.stderr) == (0, "")
    assert json.loads(as_json.stdout) == {
        "row_key": KEY,
        "services": ["essential-1"],
        "message_timestamp": "2026-11-24T06:40:50.000Z",
        "cell_timestamp": "2026-11-24T06:40:50.000Z",
        "cell_timestamp_micros": V2_MICROS,
        "region": "eu",
        "services_detail": DETAIL,
        "older_columns": {},
    }


def test_v2_columns_of_an_older_event_are_not_reported_as_current(
    resources: TestResources,
) -> None:
    write(resources, ConsentV2.model_validate_json(V2_JSON))
    v1_only(resources)  # newer: replaces services and message_timestamp only

    done = lookup(resources, "--domain", "example.com", "--user", USER)
    as_json = lookup(resources, "--domain", "example.com", "--user", USER, "--json")

    older = "(belongs to an older event, cell timestamp 2026-11-24T06:40:50.000Z; "
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == lines(
        ("row", KEY),
        ("services", "essential-1, marketing-5"),
        ("message_timestamp", "2026-11-24T06:40:53.123Z"),
        ("cell timestamp", f"2026-11-24T06:40:53.123Z ({V1_MICROS} us)"),
        ("services_detail", f"essential-1 granted, ads-2 denied {older}not part of this consent)"),
        ("region", f"eu {older}not part of this consent)"),
    )
    stale: dict[str, Any] = {
        "cell_timestamp": "2026-11-24T06:40:50.000Z",
        "cell_timestamp_micros": V2_MICROS,
    }
    record = json.loads(as_json.stdout)
    assert (record["region"], record["services_detail"]) == (None, None)
    assert record["services"] == ["essential-1", "marketing-5"]
    assert record["older_columns"] == {
        "services_detail": {"value": DETAIL, **stale},
        "region": {"value": "eu", **stale},
    }


def test_absent_row(resources: TestResources) -> None:
    v1_only(resources)
    other = "1b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11"

    done = lookup(resources, "--domain", "example.com", "--user", other)

    assert (done.returncode, done.stdout) == (1, "")
    where = f"{PROJECT}/{resources.instance}/{resources.table('consent')}"
    assert done.stderr == f"error: no row example.com#{other} in {where}\n"


@pytest.mark.parametrize(
    ("domain", "user", "message"),
    [
        ("example.com", "not-a-uuid", "--user='not-a-uuid': Input should be a valid UUID"),
        ("example", USER, "--domain='example': String should match pattern"),
        ("exa mple.com", USER, "--domain='exa mple.com': String should match pattern"),
    ],
)
def test_invalid_input(resources: TestResources, domain: str, user: str, message: str) -> None:
    done = lookup(resources, "--domain", domain, "--user", user)

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"error: invalid input: {message}")


def test_refuses_the_local_project_outside_the_emulator(resources: TestResources) -> None:
    env = {k: v for k, v in os.environ.items() if k != BIGTABLE_ENV}

    done = lookup(resources, "--domain", "example.com", "--user", USER, env=env, project=False)

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(
        "error: BIGTABLE_EMULATOR_HOST is not set and no --project was given"
    )
