"""Run the consent lookup HTTP function locally (functions-framework) for tests and demos."""

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.local.emulators import free_port

TARGET = "lookup_consent"
ENTRY_MODULE = "stream.lookup.main"  # what the bundle ships as main.py (see infra/lookup)
MAX_OUTPUT = 4000


class LookupServerError(RuntimeError):
    """The function did not start; the message carries the server's output."""


def entry_source() -> Path:
    """The file functions-framework loads (`--source`), found without importing it."""
    spec = importlib.util.find_spec(ENTRY_MODULE)
    if spec is None or spec.origin is None:
        raise LookupServerError(f"{ENTRY_MODULE} is not importable from {sys.executable}")
    return Path(spec.origin)


class LookupServer:
    """`functions-framework --target lookup_consent` on 127.0.0.1, reading one consent table.

    `project=None` leaves LOOKUP_PROJECT unset; `env` adds or (with None) removes variables.
    """

    def __init__(
        self,
        project: str | None,
        instance: str,
        table: str,
        port: int | None = None,
        env: Mapping[str, str | None] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {"LOOKUP_PROJECT": project, "LOOKUP_INSTANCE": instance, "LOOKUP_TABLE": table}
        self._env.update(env or {})
        self._startup_timeout = startup_timeout
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> "LookupServer":
        env = dict(os.environ)
        for name, value in self._env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self._log = tempfile.NamedTemporaryFile(prefix="lookup-server-", suffix=".log")
        command = [sys.executable, "-m", "functions_framework", "--target", TARGET]
        command += ["--source", str(entry_source()), "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Until the app answers HTTP (any status: a bare GET is a 400), or fail with its output."""
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LookupServerError(
                    f"lookup server exited with code {process.returncode}:\n"
                    f"{self.output()[-MAX_OUTPUT:]}"
                )
            try:
                with urllib.request.urlopen(self.url, timeout=2):  # noqa: S310 - our loopback URL
                    return
            except urllib.error.HTTPError as answer:
                answer.close()
                return
            except OSError:
                time.sleep(0.1)
        raise LookupServerError(
            f"lookup server on {self.url} not ready after {self._startup_timeout:.0f}s:\n"
            f"{self.output()[-MAX_OUTPUT:]}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
