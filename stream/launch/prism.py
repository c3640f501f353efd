"""The local Prism job server, owned by the launcher: started on a free port, again if it died.

Beam's PrismRunner keeps one Prism per process and, if that Prism dies, hands the next job
its dead address (the launcher's restart then failed with "connection refused"). The launcher
starts Prism itself and passes Beam's public `--job_endpoint` instead (stream/DESIGN.md,
"Launching and stopping locally").
"""

import json
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

_LOG = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 60.0
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING}


class PrismStartError(RuntimeError):
    """Prism did not start; the message says what it printed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrismServer:
    """One Prism process at a time; `endpoint()` starts one when there is none alive."""

    def __init__(self, binary: Path) -> None:
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running Prism's process id (None before the first start)."""
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        """Whether the Prism this server started is still running."""
        return self._process is not None and self._process.poll() is None

    def endpoint(self) -> str:
        """`localhost:<port>` of a running Prism (started now if needed)."""
        if not self.alive():
            if self._process is not None:
                _LOG.warning("Prism had exited (%s); starting a new one", self._process.returncode)
            self._start()
        return f"localhost:{self._port}"

    def stop(self) -> None:
        """Stop Prism (what it runs is cancelled)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _start(self) -> None:
        self._port = _free_port()
        command = [
            str(self._binary),
            "--job_port",
            str(self._port),
            "--log_level",
            "info",
            "--log_kind",
            "json",
            "--serve_http=false",  # Go takes boolean flags only as -flag=value
        ]
        self._process = subprocess.Popen(  # noqa: S603 - the binary `make prism` built
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(
            target=_relay_log, args=(self._process,), name="prism-log", daemon=True
        ).start()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not _listening(self._port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PrismStartError(f"Prism ({self._binary}) did not start on {self._port}")
            time.sleep(0.05)
        self.starts += 1
        _LOG.info("Prism started at localhost:%d (%s)", self._port, self._binary)


def _relay_log(process: subprocess.Popen[bytes]) -> None:
    """Prism's JSON log lines as this process's log records."""
    for raw in process.stdout or ():
        line = raw.decode(errors="replace").rstrip()
        try:
            record = json.loads(line)
        except ValueError:
            _LOG.info("prism: %s", line)
            continue
        level = _LEVELS.get(str(record.get("level", "INFO")).upper(), logging.ERROR)
        extra = {k: v for k, v in record.items() if k not in ("time", "level", "msg", "source")}
        details = f" ({', '.join(f'{k}={v!r}' for k, v in extra.items())})" if extra else ""
        _LOG.log(level, "%s%s", record.get("msg", line), details)
