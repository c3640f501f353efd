"""Run the pipeline CLI `python -m stream.main` (or another module) as a process; stop, kill."""

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


class PipelineProcess:
    """The pipeline CLI (or `module`) in a subprocess with its output in a log file."""

    def __init__(
        self,
        flags: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        module: str = "stream.main",
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._offset = 0
        self.process = subprocess.Popen(  # noqa: S603 - our own module, our interpreter
            [sys.executable, "-m", module, *flags],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own group: Prism and workers die with it
        )

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 120) -> int:
        """Ctrl-C, as a user would; returns the exit code.

        The DirectRunner can take about a minute to cancel (measured 59 s on CI), so the
        grace period before SIGKILL is two minutes.
        """
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup code runs (a crash)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stray children (Prism)
        except ProcessLookupError:
            pass
        self._log.close()

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def new_lines(self, containing: str = "") -> list[str]:
        """Lines printed since the previous call (optionally only those containing a text)."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        lines = complete.decode(errors="replace").splitlines()
        return [line for line in lines if containing in line]
