"""Publish test messages and read results back, independently of the pipeline's code."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient, ReadRowsQuery

# row key -> (family, qualifier) -> [(timestamp_micros, value), ...] newest first
Table = dict[str, dict[tuple[str, str], list[tuple[int, bytes]]]]


def publish(topic: str, messages: Iterable[tuple[bytes, dict[str, str]]]) -> list[str]:
    """Publish and wait for every message; returns the message ids in order."""
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
    )
    try:
        futures = [publisher.publish(topic, data, **attrs) for data, attrs in messages]
        return [future.result(timeout=60) for future in futures]
    finally:
        publisher.stop()


def read_table(project: str, instance: str, table_id: str) -> Table:
    """Every cell version of every row."""
    result: Table = {}
    with BigtableDataClient(project=project) as client:
        table = client.get_table(instance, table_id)
        for row in table.read_rows(ReadRowsQuery()):
            cells = result.setdefault(row.row_key.decode(), {})
            for cell in row.cells:
                qualifier = cell.qualifier.decode()
                cells.setdefault((cell.family, qualifier), []).append(
                    (cell.timestamp_micros, cell.value)
                )
    return result


def count_rows(project: str, instance: str, table_id: str) -> int:
    """Number of rows (keys only)."""
    from google.cloud.bigtable.data.row_filters import StripValueTransformerFilter

    with BigtableDataClient(project=project) as client:
        table = client.get_table(instance, table_id)
        query = ReadRowsQuery(row_filter=StripValueTransformerFilter(True))
        return sum(1 for _ in table.read_rows(query))


@dataclass(frozen=True)
class Letter:
    """A dead letter as a consumer sees it."""

    data: bytes
    attributes: dict[str, str]


def pull_all(subscription: str, expected: int, timeout: float = 60.0) -> list[Letter]:
    """Pull (and ack) until `expected` messages arrived or `timeout`.

    Then one more short pull catches extras, so tests also see duplicates beyond `expected`.
    """
    letters: list[Letter] = []
    deadline = time.monotonic() + timeout
    with pubsub_v1.SubscriberClient() as subscriber:

        def pull_once(wait: float) -> int:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 1000}, timeout=wait
                )
            except Exception:
                return 0
            received = list(response.received_messages)
            if received:
                subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [r.ack_id for r in received],
                    }
                )
            for item in received:
                letters.append(Letter(bytes(item.message.data), dict(item.message.attributes)))
            return len(received)

        while len(letters) < expected and time.monotonic() < deadline:
            if not pull_once(2.0):
                time.sleep(0.2)
        pull_once(1.0)
    return letters


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
