"""The launcher's own Prism: started on a free port, started again after it died, stopped."""

import os
import signal
import time
from pathlib import Path

import pytest

from stream.launch.prism import PrismServer, PrismStartError, _listening
from stream.launch.runners import find_prism


@pytest.fixture
def binary() -> Path:
    found = find_prism()
    if found is None:
        pytest.skip("no Prism binary (make prism)")
    return found


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_a_prism_that_died_is_started_again(binary: Path) -> None:
    server = PrismServer(binary)
    try:
        first = server.endpoint()
        assert server.endpoint() == first and server.starts == 1  # alive: the same one
        assert _listening(port_of(first))
        os.kill(server.pid or 0, signal.SIGKILL)
        while server.alive():
            time.sleep(0.05)
        second = server.endpoint()
        assert server.starts == 2 and _listening(port_of(second))
    finally:
        server.stop()
    assert not server.alive()


def test_a_binary_that_does_not_start_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "prism"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(PrismStartError, match="did not start"):
        PrismServer(fake).endpoint()
