"""Process-wide Pub/Sub and Bigtable clients, shared by every DoFn instance and thread.

The clients are thread-safe and expensive to build; DoFn.setup() takes them from here
because the DirectRunner sets a DoFn up for every bundle (stream/DESIGN.md). They live until
the process exits; the key includes the emulator address, so tests with other emulators get
other clients.
"""

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from google.cloud import pubsub_v1
from google.cloud.bigtable.data import BigtableDataClient

T = TypeVar("T")
_lock = threading.Lock()
_clients: dict[tuple[str, ...], Any] = {}


def _shared(key: tuple[str, ...], build: Callable[[], T]) -> T:
    with _lock:
        if key not in _clients:
            _clients[key] = build()
        return _clients[key]  # type: ignore[no-any-return]


def bigtable(project: str) -> BigtableDataClient:
    """The data client for `project`."""
    host = os.environ.get("BIGTABLE_EMULATOR_HOST", "")
    return _shared(("bigtable", project, host), lambda: BigtableDataClient(project=project))


def publisher() -> pubsub_v1.PublisherClient:
    """A publisher that batches briefly (20 ms or 500 messages)."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST", "")
    return _shared(
        ("publisher", host),
        lambda: pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.02)
        ),
    )


def subscriber() -> pubsub_v1.SubscriberClient:
    """A subscriber for pull and acknowledge calls."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST", "")
    return _shared(("subscriber", host), pubsub_v1.SubscriberClient)
