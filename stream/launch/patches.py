"""Every patch of Beam's internals and Prism's protocol, in one place: named, checked, explicit.

Nothing here runs on import: the launcher checks the installed Beam version (`check`) and
applies the patches a run needs (`apply`), before it builds the pipeline. The reasons are in
stream/DESIGN.md, "Patches". Google-client internals that worker code relies on are in
stream/pipeline/io/client_patches.py, checked here too.
"""

import copy
import functools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, PortableOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.worker import sdk_worker, sdk_worker_main, statesampler, worker_pool_main
from apache_beam.transforms import environments

from stream.pipeline.io import client_patches

BEAM_VERSIONS = ("2.77.0",)  # the versions whose internals these patches were written for
# The launcher's metric short ids start here; a rollup worker process counts from 1.
LAUNCHER_SHORT_IDS = 1 << 32


@dataclass(frozen=True, slots=True)
class Patch:
    """One patch: what it touches, why (one line), and what running without it costs."""

    name: str
    touches: tuple[str, ...]  # the internal names it replaces or reads
    reason: str
    without: str


SAMPLER_WITHOUT_THREAD = Patch(
    "sampler_without_thread",
    ("apache_beam.runners.worker.statesampler.StateSampler",),
    "each bundle starts a state sampler thread and its end joins it (up to 200 ms); the "
    "execution times it samples are not used on a local runner",
    "bundle ends wait up to 200 ms (a 60k drain ~7% slower), a thread started per bundle",
)
WORKER_PROCESS = Patch(
    "worker_process",
    (
        "apache_beam.runners.portability.portable_runner.PortableRunner"
        ".start_and_replace_loopback_environments",
        "apache_beam.runners.worker.sdk_worker_main._get_state_cache_size_bytes",
        "apache_beam.runners.worker.sdk_worker_main._get_data_buffer_time_limit_ms",
        "apache_beam.runners.worker.sdk_worker.SHORT_ID_CACHE._lock",
        "apache_beam.runners.worker.sdk_worker.SHORT_ID_CACHE._last_short_id",
    ),
    "the keyed rollup stages and a second ingest get a worker process (a second GIL); Prism "
    "2.77 keeps one metric short-id table per job, so the launcher's ids move out of the "
    "child's range",
    "rollups and every ingest share one process (--rollup_worker=thread "
    "--ingest_processes=1: a 60k drain ~15-40% slower)",
)
FRESH_METRICS = Patch(
    "fresh_metrics",
    ("apache_beam.runners.portability.portable_runner.PipelineResult._metrics",),
    "a portable job's result caches its first metrics answer forever; the status line "
    "needs each reading fresh",
    "no status line on portable runners (the counters would never move)",
)
RAW_MUTATION_ENTRIES = Patch(
    "raw_mutation_entries",
    client_patches.TOUCHES,
    "the Bigtable data client builds each MutateRows entry through proto-plus (19 us a row; "
    "the raw protobuf takes 2.4 us)",
    "the client's own entries (19 us a row instead of 2.4)",
)
PATCHES = (SAMPLER_WITHOUT_THREAD, WORKER_PROCESS, FRESH_METRICS, RAW_MUTATION_ENTRIES)
BEAM_PATCHES = (SAMPLER_WITHOUT_THREAD, WORKER_PROCESS, FRESH_METRICS)


class PatchError(RuntimeError):
    """A library version the patches were not written for; the message says what to do."""


def check(
    patches: tuple[Patch, ...],
    beam_version: str = beam.version.__version__,
    bigtable_version: str | None = None,
) -> None:
    """Refuse to patch a Beam (or Bigtable client) these patches were not written for."""
    bigtable_version = bigtable_version or client_patches.installed_version()
    problems = []
    beam_ones = [p for p in patches if p in BEAM_PATCHES]
    if beam_ones and beam_version not in BEAM_VERSIONS:
        problems.append(
            f"apache-beam {beam_version} is installed; {', '.join(p.name for p in beam_ones)} "
            f"patch internals of apache-beam {', '.join(BEAM_VERSIONS)}"
        )
    if RAW_MUTATION_ENTRIES in patches and not client_patches.written_for(bigtable_version):
        problems.append(
            f"google-cloud-bigtable {bigtable_version} is installed; raw_mutation_entries "
            f"patches internals of google-cloud-bigtable {client_patches.VERSIONS}"
        )
    if problems:
        costs = "; ".join(f"{p.name}: {p.without}" for p in patches)
        raise PatchError(
            "; ".join(problems)
            + ". Install the versions pyproject.toml pins (make venv), or run without the "
            f"patches: --patches=off ({costs}). See stream/DESIGN.md, Patches."
        )


_applied: set[str] = set()
_lock = threading.Lock()


def apply(patches: tuple[Patch, ...]) -> None:
    """Apply each of `patches` in this process, once (the raw entries apply in the workers)."""
    actions: dict[str, Callable[[], None]] = {
        SAMPLER_WITHOUT_THREAD.name: _sampler_without_thread,
        WORKER_PROCESS.name: _worker_process,
        FRESH_METRICS.name: _fresh_metrics,
    }
    with _lock:
        for patch in patches:
            if patch.name in actions and patch.name not in _applied:
                actions[patch.name]()
                _applied.add(patch.name)


class _ThreadlessSampler(statesampler.StateSampler):
    """Beam's state sampler without its sampling thread: it tracks states, times none."""

    def start(self) -> None:
        self.tracked_thread = threading.current_thread()
        statesampler.set_current_tracker(self)
        self.started = True

    def stop(self) -> None:
        statesampler.set_current_tracker(None)
        self.finished = True


def _sampler_without_thread() -> None:
    # bundle_processor looks the class up in its module at each bundle.
    statesampler.StateSampler = _ThreadlessSampler


def worker_pools(pipeline: Any, options: PipelineOptions) -> list[Callable[[], None]]:
    """Beam's loop over LOOPBACK environments, a pool each: threads, or processes if hinted."""
    portable = copy.deepcopy(options.view_as(PortableOptions))
    experiments = options.view_as(DebugOptions).experiments or []
    cleanups: list[Callable[[], None]] = []
    for env in pipeline.components.environments.values():
        if env.urn != python_urns.EMBEDDED_PYTHON_LOOPBACK:
            continue
        portable.environment_type = "EXTERNAL"
        portable.environment_config, server = (
            worker_pool_main.BeamFnExternalWorkerPoolServicer.start(
                state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
                data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(
                    experiments
                ),
                use_process=bool(env.resource_hints),
            )
        )
        external = environments.ExternalEnvironment.from_options(portable).to_runner_api(None)
        env.urn = external.urn
        env.payload = external.payload
        cleanups.append(functools.partial(server.stop, 1))
    return cleanups


def _worker_process() -> None:
    # The pool spawns `python`: this interpreter's comes first on PATH.
    here = os.path.dirname(sys.executable)
    os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    move_short_ids(LAUNCHER_SHORT_IDS)
    setattr(  # noqa: B010 - Beam's loop, with the choice of process made per environment
        portable_runner.PortableRunner,
        "start_and_replace_loopback_environments",
        staticmethod(worker_pools),
    )


def move_short_ids(base: int) -> None:
    """This process's next metric short ids from `base` on (no-op if already past it)."""
    cache = sdk_worker.SHORT_ID_CACHE
    with cache._lock:
        if cache._last_short_id < base:
            cache._last_short_id = base


def _fresh_metrics() -> None:
    cached = portable_runner.PipelineResult.metrics

    @functools.wraps(cached)
    def metrics(result: Any) -> Any:
        result._metrics = None
        return cached(result)

    portable_runner.PipelineResult.metrics = metrics
