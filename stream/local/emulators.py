"""Find, start, wait for and stop the Pub/Sub and Bigtable emulators of the Google Cloud CLI."""

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stream.names import BIGTABLE_ENV, PUBSUB_ENV

PUBSUB_PACKAGE = "google-cloud-cli-pubsub-emulator"
BIGTABLE_PACKAGE = "google-cloud-cli-bigtable-emulator"
PUBSUB_RELATIVE = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
BIGTABLE_RELATIVE = Path("platform/bigtable-emulator/cbtemulator")
DEFAULT_PUBSUB_PORT = 8085
DEFAULT_BIGTABLE_PORT = 8086


class EmulatorError(RuntimeError):
    """An emulator is missing or did not start; the message says what to install or check."""


def sdk_root() -> Path:
    """The Google Cloud CLI's root, as `gcloud info` reports it (CLOUDSDK_ROOT_DIR wins)."""
    override = os.environ.get("CLOUDSDK_ROOT_DIR")
    if override:
        return Path(override)
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud is not on PATH: install the Google Cloud CLI and the packages "
            f"{PUBSUB_PACKAGE} and {BIGTABLE_PACKAGE} (apt-get install ...)"
        )
    out = subprocess.run(  # noqa: S603 - fixed arguments, gcloud from PATH
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return Path(out.stdout.strip())


def emulator_binary(relative: Path, package: str, root: Path | None = None) -> Path:
    """The emulator executable under the SDK root, or a clear error naming its package."""
    path = (root or sdk_root()) / relative
    if not path.exists():
        raise EmulatorError(
            f"{path} not found: install the Debian package {package} "
            f"(apt-get install {package}), then retry"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Block until host:port accepts connections; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(f"emulator on port {port} exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise EmulatorError(f"emulator on {host}:{port} not ready after {timeout:.0f}s")


@dataclass
class Emulator:
    """One running emulator process and the address clients use (`host:port`)."""

    name: str
    env_var: str
    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """`host:port`, the value of its *_EMULATOR_HOST variable."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop the emulator and everything it spawned (its process group)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


def _start(command: list[str], log_path: Path | None) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(  # noqa: S603 - binaries from the SDK root
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _launch(
    name: str,
    env_var: str,
    command: list[str],
    address: tuple[str, int],
    log_dir: Path | None,
    ready: float,
) -> Emulator:
    process = _start(command, log_dir / f"{name}-emulator.log" if log_dir else None)
    emulator = Emulator(name, env_var, *address, process)
    try:
        wait_for_port(*address, ready, process)
    except EmulatorError:
        emulator.stop()
        raise
    return emulator


def start_pubsub(port: int = 0, log_dir: Path | None = None, host: str = "127.0.0.1") -> Emulator:
    """Start the Pub/Sub emulator (Java, ~5 s) on `port` (0: any free port)."""
    binary = emulator_binary(PUBSUB_RELATIVE, PUBSUB_PACKAGE)
    port = port or free_port()
    command = [str(binary), f"--host={host}", f"--port={port}"]
    return _launch("pubsub", PUBSUB_ENV, command, (host, port), log_dir, ready=60)


def start_bigtable(port: int = 0, log_dir: Path | None = None, host: str = "127.0.0.1") -> Emulator:
    """Start the Bigtable emulator (in memory, instant) on `port` (0: any free port)."""
    binary = emulator_binary(BIGTABLE_RELATIVE, BIGTABLE_PACKAGE)
    port = port or free_port()
    command = [str(binary), "-host", host, "-port", str(port)]
    return _launch("bigtable", BIGTABLE_ENV, command, (host, port), log_dir, ready=30)


class Emulators:
    """Both emulators as a context manager that exports their *_EMULATOR_HOST variables.

    Reuses an emulator whose variable is already set; starts (and later stops) the others.
    """

    def __init__(
        self,
        pubsub_port: int = 0,
        bigtable_port: int = 0,
        log_dir: Path | None = None,
        reuse_env: bool = True,
    ) -> None:
        self._ports = {PUBSUB_ENV: pubsub_port, BIGTABLE_ENV: bigtable_port}
        self._log_dir = log_dir
        self._reuse = reuse_env
        self.started: list[Emulator] = []
        self._saved_env: dict[str, str | None] = {}

    def __enter__(self) -> "Emulators":
        starters = {PUBSUB_ENV: start_pubsub, BIGTABLE_ENV: start_bigtable}
        try:
            for env_var, start in starters.items():
                if self._reuse and os.environ.get(env_var):
                    continue
                emulator = start(self._ports[env_var], self._log_dir)
                self.started.append(emulator)
                self._saved_env[env_var] = os.environ.get(env_var)
                os.environ[env_var] = emulator.address
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop what this object started and restore the environment."""
        for emulator in reversed(self.started):
            emulator.stop()
        self.started.clear()
        for env_var, value in self._saved_env.items():
            if value is None:
                os.environ.pop(env_var, None)
            else:
                os.environ[env_var] = value
        self._saved_env.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
