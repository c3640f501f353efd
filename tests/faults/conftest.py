"""A fault proxy in front of the session's Bigtable emulator, per test."""

import os
from collections.abc import Iterator

import pytest

from stream.local.emulators import Emulators
from stream.names import BIGTABLE_ENV
from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxy(emulators: Emulators) -> Iterator[FaultProxy]:
    """Forwards to the real emulator; rules are set by the test (none at first)."""
    with FaultProxy(os.environ[BIGTABLE_ENV], history=20_000) as running:
        yield running
