"""Fault proxies in front of the session's emulators, per test."""

import os
from collections.abc import Iterator

import pytest

from stream.local.emulators import Emulators
from stream.names import BIGTABLE_ENV, PUBSUB_ENV
from tests.faults.proxy import FaultProxy
from tests.faults.pubsub_proxy import PubSubFaultProxy


@pytest.fixture
def proxy(emulators: Emulators) -> Iterator[FaultProxy]:
    """Forwards to the real Bigtable emulator; rules are set by the test (none at first)."""
    with FaultProxy(os.environ[BIGTABLE_ENV], history=20_000) as running:
        yield running


@pytest.fixture
def pubsub_proxy(emulators: Emulators) -> Iterator[PubSubFaultProxy]:
    """Forwards to the real Pub/Sub emulator; rules are set by the test (none at first)."""
    with PubSubFaultProxy(os.environ[PUBSUB_ENV]) as running:
        yield running
