"""Session-wide emulators on free ports (started only if an emulator test runs)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.registry import PLUGINS_ENV
from stream.local.emulators import Emulators
from stream.names import BIGTABLE_ENV, PUBSUB_ENV
from tests.helpers.resources import TestResources, new_resources

# The suite tests the product: schema plugins installed in this venv (README, "Your own
# message types") stay out of it and of the pipelines it starts, except where a test asks.
os.environ[PLUGINS_ENV] = "off"


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """Both emulators, started once per session on free ports, stopped at the end.

    Their addresses are exported (PUBSUB_EMULATOR_HOST, BIGTABLE_EMULATOR_HOST) for the
    clients in this process and for pipeline subprocesses.
    """
    log_dir = tmp_path_factory.mktemp("emulators")
    with Emulators(log_dir=log_dir, reuse_env=False) as running:
        assert os.environ[PUBSUB_ENV] and os.environ[BIGTABLE_ENV]
        yield running


@pytest.fixture
def resources(emulators: Emulators) -> TestResources:
    """A fresh topic, subscription, dead-letter topic/subscription, instance and tables."""
    return new_resources()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
