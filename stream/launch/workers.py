"""The SDK workers of a Prism run: quicker bundle ends, and the rollups' own process.

Bundle ends. Each bundle's state sampler (Beam's per-step wall-time accounting) is a thread
sleeping in growing steps up to 200 ms, and the bundle's end joins it: a bundle waits for the
sampler's current sleep to run out. py-spy (--idle) put 11% of the bundle threads' wall time
of a drain in that join. `quicker_bundle_ends()` caps the step at 10 ms: drain of 60,000
messages with rollups on, 3 rounds alternated: 4,587 -> 4,932 msg/s (medians). Local runs only:
Dataflow's workers do not run this process's code.

`--rollup_worker=process`: Prism runs the rollup stages in an SDK worker process of their own.

Prism starts one SDK worker per environment, and Python runs every LOOPBACK worker as a
thread of this process: one GIL for everything. A resource hint on the rollup stages
(`ROLLUP_HINTS` in stream/pipeline/rollups/transform.py; Prism ignores its value) gives them
an environment of their own, and here its worker becomes a child process, while the default
environment (pull, validation, row writes, acknowledgement, the lease keepers) stays in this
process: the launcher still gives back held messages when a job ends.

Beam has an experiment for this, `use_loopback_process_worker`, but it moves every
environment to a process. `start_and_replace_loopback_environments` (Beam 2.77's
`PortableRunner`, installed by `install()`) is the same loop with the choice made per
environment; tests/unit/test_rollup_worker.py pins the Beam code it relies on.
"""

import copy
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, PortableOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.worker import sdk_worker_main, statesampler, worker_pool_main
from apache_beam.transforms import environments

from stream.pipeline import monitoring_ids


def _worker_pools(pipeline: Any, options: PipelineOptions) -> list[Callable[[], None]]:
    """A worker pool per LOOPBACK environment: threads for the default, processes for hinted."""
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


SAMPLING_PERIOD_MS = 10  # Beam's default: 200


class _QuickerSampler(statesampler.StateSampler):
    """Beam's state sampler with a shorter longest sleep (see the module docstring)."""

    def __init__(
        self, prefix: str, counter_factory: Any, sampling_period_ms: int = SAMPLING_PERIOD_MS
    ) -> None:
        super().__init__(prefix, counter_factory, sampling_period_ms)


def quicker_bundle_ends() -> None:
    """Bundles of this process's SDK worker end within 10 ms of their work, not 200."""
    # bundle_processor looks the class up in the module at each bundle.
    statesampler.StateSampler = _QuickerSampler


def install() -> None:
    """Rollup stages in a process of their own (the pool spawns `python`: ours comes first)."""
    here = os.path.dirname(sys.executable)
    os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    # Prism keeps one table of metric short ids per job: each process needs its own range.
    os.environ[monitoring_ids.SEPARATE_IDS] = "1"
    monitoring_ids.separate_short_ids()
    setattr(  # noqa: B010 - replaces Beam's loop (see the module docstring)
        portable_runner.PortableRunner,
        "start_and_replace_loopback_environments",
        staticmethod(_worker_pools),
    )
