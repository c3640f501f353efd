"""Reading back what the pipeline stored, with the plain clients: rows, counts, dead letters.

One library for the tests, the verifier and the bench; it never uses the pipeline's own code
(its validation, mapping or writers), so what it reads is evidence, not an echo.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient, ReadRowsQuery, RowRange
from google.cloud.bigtable.data.row_filters import StripValueTransformerFilter

# One cell version: (family, qualifier, timestamp micros, value), newest version first.
Version = tuple[str, str, int, bytes]
# row key -> (family, qualifier) -> [(timestamp_micros, value), ...] newest first
Table = dict[str, dict[tuple[str, str], list[tuple[int, bytes]]]]
# "family:qualifier" -> {timestamp_micros: value as text}: one row, as the verifier compares it
StoredRow = dict[str, dict[int, str]]

# A pull that times out, or a blip of the emulator's connection, is an empty pull; anything
# else (a missing subscription, bad credentials) is raised, never read as "nothing there".
EMPTY_PULL = (gexc.DeadlineExceeded, gexc.ServiceUnavailable)


def _query(prefix: str | None, keys_only: bool) -> ReadRowsQuery:
    row_filter = StripValueTransformerFilter(True) if keys_only else None
    if prefix is None:
        return ReadRowsQuery(row_filter=row_filter)
    start = prefix.encode()
    end = start[:-1] + bytes([start[-1] + 1])  # the first key after every `prefix...`
    return ReadRowsQuery(row_ranges=[RowRange(start, end)], row_filter=row_filter)


def rows(
    client: BigtableDataClient,
    instance: str,
    table_id: str,
    prefix: str | None = None,
    keys_only: bool = False,
) -> Iterator[tuple[str, list[Version]]]:
    """Every row (or those whose key starts with `prefix`) in key order, every version."""
    table = client.get_table(instance, table_id)
    for row in table.read_rows(_query(prefix, keys_only)):
        versions = [
            (cell.family, cell.qualifier.decode(), cell.timestamp_micros, cell.value)
            for cell in row.cells
        ]
        yield row.row_key.decode(), versions


def count_rows(
    client: BigtableDataClient, instance: str, table_id: str, prefix: str | None = None
) -> int:
    """Rows in a table (or under a key prefix), reading keys only."""
    return sum(1 for _ in rows(client, instance, table_id, prefix, keys_only=True))


def scan(
    client: BigtableDataClient, instance: str, table_id: str
) -> Iterator[tuple[str, StoredRow]]:
    """Every row in key order as the verifier compares it (values as text)."""
    for key, versions in rows(client, instance, table_id):
        stored: StoredRow = {}
        for family, qualifier, ts, value in versions:
            stored.setdefault(f"{family}:{qualifier}", {})[ts] = value.decode(errors="replace")
        yield key, stored


def read_table(project: str, instance: str, table_id: str) -> Table:
    """Every cell version of every row (a test's whole-table view)."""
    result: Table = {}
    with BigtableDataClient(project=project) as client:
        for key, versions in rows(client, instance, table_id):
            cells = result.setdefault(key, {})
            for family, qualifier, ts, value in versions:
                cells.setdefault((family, qualifier), []).append((ts, value))
    return result


def table_rows(project: str, instance: str, table_id: str) -> int:
    """`count_rows` with its own client (for polling from a test)."""
    with BigtableDataClient(project=project) as client:
        return count_rows(client, instance, table_id)


@dataclass(frozen=True)
class Letter:
    """A dead letter (or any message) as a consumer pulls it."""

    data: bytes
    attributes: dict[str, str]
    message_id: str = ""


def pull_letters(
    subscription: str,
    expected: int | None = None,
    timeout: float = 60.0,
    quiet: float = 2.0,
    keep: Callable[[list[Letter]], None] | None = None,
) -> list[Letter]:
    """Pull and acknowledge until `expected` arrived (or, without one, two empty pulls).

    Then one more short pull, so callers also see extras beyond `expected` (duplicates).
    `keep` is called with each pulled batch before it is acknowledged (the verifier stores
    them first: a crash then leaves them in the subscription, never in neither place). An
    error other than an empty pull is raised.
    """
    letters: list[Letter] = []
    deadline = time.monotonic() + timeout
    with pubsub_v1.SubscriberClient() as subscriber:

        def pull_once(wait: float) -> int:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 1000}, timeout=wait
                )
            except EMPTY_PULL:
                return 0
            received = list(response.received_messages)
            batch = [
                Letter(bytes(r.message.data), dict(r.message.attributes), r.message.message_id)
                for r in received
            ]
            if batch and keep is not None:
                keep(batch)
            letters.extend(batch)
            if received:
                subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]}
                )
            return len(received)

        empty = 0
        while time.monotonic() < deadline:
            if expected is not None and len(letters) >= expected:
                break
            if pull_once(quiet):
                empty = 0
                continue
            empty += 1
            if expected is None and empty >= 2:
                return letters  # Pub/Sub may answer one pull empty while messages are pending
            time.sleep(0.2)
        pull_once(1.0)
    return letters
