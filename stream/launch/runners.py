"""Choose the runner explicitly: Prism when a binary is available, else the DirectRunner.

Prism is Beam's portable local runner (a Go binary). Beam downloads it from GitHub, which is
not reachable everywhere; `make prism` builds it from the Go module proxy into PRISM_CACHE.
"""

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from stream.launch.options import DATAFLOW, PRISM, runner_name

_LOG = logging.getLogger(__name__)
BEAM_VERSION = beam.version.__version__
JOB_STREAM_SECONDS = 10 * 365 * 24 * 3600  # a streaming job's lifetime, not a request's
DIRECT = "BundleBasedDirectRunner"
NATIVE_PUBSUB_RUNNERS = frozenset({DATAFLOW, DIRECT, "DirectRunner", "SwitchingDirectRunner"})
DIRECT_RUNNER_LOSSES = (
    "Falling back to the BundleBasedDirectRunner. It reads with Beam's ReadFromPubSub, which "
    "acknowledges messages when they are read, before they are written: a crash or a failed "
    "bundle beyond its retries loses them. It also pulls 10 messages per bundle (~200 "
    "events/s). Run `make prism` (needs Go) for the Prism runner, which acknowledges only "
    "after the write."
)


# The file name carries the patch level of infra/local/prism-*.patch (kept equal to the
# Makefile's PRISM; a unit test checks): a new patch makes `make prism` build anew.
PRISM_BINARY_NAME = "prism-p1"


def prism_cache() -> Path:
    """Where `make prism` puts the binary built for the installed Beam version."""
    root = os.environ.get("STREAM_PRISM_CACHE", "~/.cache/stream-ingest/prism")
    return Path(root).expanduser() / f"v{BEAM_VERSION}" / PRISM_BINARY_NAME


def find_prism() -> Path | None:
    """A usable Prism binary: $PRISM_LOCATION, the project cache, or Beam's own cache."""
    candidates = [
        os.environ.get("PRISM_LOCATION", ""),
        str(prism_cache()),
        str(Path("~/.apache_beam/cache/prism/bin/prism").expanduser()),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def _beam_can_download_prism(timeout: float = 3.0) -> bool:
    """Whether Beam's own Prism download (from github.com) is reachable from here."""
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class RunnerChoice:
    """The runner this run uses and whether its Pub/Sub read is Beam's native one."""

    name: str
    native_pubsub: bool
    note: str = ""


def choose_runner(options: PipelineOptions) -> RunnerChoice:
    """Set the runner on `options` when it was not given, and report the choice.

    An explicit --runner is kept as is (Prism gets the cached binary when it has no
    --prism_location). Without --runner: Prism if a binary is at hand or downloadable,
    otherwise the BundleBasedDirectRunner, with a warning that says what that loses.
    """
    standard = options.view_as(StandardOptions)
    name = runner_name(options)
    prism_options = options.view_as(PrismRunnerOptions)
    if not name:
        binary = find_prism()
        if binary is not None or _beam_can_download_prism():
            name = PRISM
        else:
            _LOG.warning(DIRECT_RUNNER_LOSSES)
            name = DIRECT
        standard.runner = name
    if name == PRISM and not prism_options.prism_location:
        binary = find_prism()
        if binary is not None:
            prism_options.prism_location = str(binary)
    if name == PRISM:
        # LOOPBACK: the SDK harness runs inside this process (Prism's default for Python).
        options.view_as(PortableOptions).environment_type = (
            options.view_as(PortableOptions).environment_type or "LOOPBACK"
        )
        if "job_server_timeout" not in options.get_all_options(drop_default=True):
            # Beam puts this request timeout (default 300 s) on the job's state and message
            # streams too: every streaming job "failed" after 5 minutes with
            # DEADLINE_EXCEEDED ("Stream removed") and was restarted (measured in the bench).
            options.view_as(PortableOptions).job_server_timeout = JOB_STREAM_SECONDS
    if name == PRISM:
        where = prism_options.prism_location or "downloaded by Beam from GitHub"
        note = f"prism at {where}"
    else:
        note = ""
    return RunnerChoice(name=name, native_pubsub=name in NATIVE_PUBSUB_RUNNERS, note=note)
