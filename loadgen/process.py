"""Run `python -m stream.main` as a real process (what users run), and stop or kill it."""

import os
import signal
import subprocess
import sys
from pathlib import Path


class PipelineProcess:
    """The pipeline CLI in a subprocess with its output in a log file."""

    def __init__(self, flags: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.main", *flags],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,  # its own group: Prism and workers die with it
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
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
        return self.log_path.read_text(errors="replace")
