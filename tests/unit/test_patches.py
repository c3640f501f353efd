"""The patches of Beam, Prism and client internals: one registry, checked, applied explicitly.

Pins the Beam code each patch replaces or reads, checks that every private name of a library
touched anywhere in stream/ is one the registry lists (and touched only in the two patch
modules), that nothing patches on import, and that an unknown Beam version is refused.
"""

import ast
import inspect
import subprocess
import sys
import threading
import tomllib
from datetime import timedelta
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.runners.worker import sdk_worker, sdk_worker_main, statesampler
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.transforms import environments
from google.cloud.bigtable.data import RowMutationEntry

from stream.launch import patches
from stream.launch.options import ConfigError, to_config
from stream.pipeline.config import RollupWorker
from stream.pipeline.io import client_patches
from stream.pipeline.rollups.transform import Rollups

ROOT = Path(__file__).resolve().parents[2]
PATCH_MODULES = {"stream/launch/patches.py", "stream/pipeline/io/client_patches.py"}
LOOPBACK = PipelineOptions(["--environment_type=LOOPBACK"])
# Written from what Beam 2.77 and google-cloud-bigtable 2.50 name privately, not from the
# registry: a new touch must be added to both.
TOUCHED = {
    "apache_beam.runners.worker.statesampler.StateSampler",
    "apache_beam.runners.portability.portable_runner.PortableRunner"
    ".start_and_replace_loopback_environments",
    "apache_beam.runners.worker.sdk_worker_main._get_state_cache_size_bytes",
    "apache_beam.runners.worker.sdk_worker_main._get_data_buffer_time_limit_ms",
    "apache_beam.runners.worker.sdk_worker.SHORT_ID_CACHE._lock",
    "apache_beam.runners.worker.sdk_worker.SHORT_ID_CACHE._last_short_id",
    "apache_beam.runners.portability.portable_runner.PipelineResult._metrics",
    "google.cloud.bigtable.data.RowMutationEntry._to_pb",
}


def _private_names(path: Path) -> set[str]:
    """`x._name` (x not self/cls) and `def _name` overriding a base class's private method."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            own = isinstance(owner, ast.Name) and owner.id in {"self", "cls"}
            if not own and not node.attr.startswith("__"):
                names.add(node.attr)
        if isinstance(node, ast.ClassDef) and node.bases:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "_to_pb":
                    names.add(item.name)
    return names


def test_the_registry_lists_every_touch_and_only_those() -> None:
    listed = {name for patch in patches.PATCHES for name in patch.touches}
    assert listed == TOUCHED
    for patch in patches.PATCHES:
        assert patch.reason and patch.without and patch.touches


def test_private_names_of_libraries_are_touched_only_in_the_patch_modules() -> None:
    touched_here = {}
    for path in sorted((ROOT / "stream").rglob("*.py")):
        names = _private_names(path)
        if names:
            touched_here[str(path.relative_to(ROOT))] = names
    assert set(touched_here) == PATCH_MODULES
    last_parts = {name.rsplit(".", 1)[-1] for name in TOUCHED}
    for module, names in touched_here.items():
        assert names <= last_parts, f"{module} touches {names - last_parts}, not registered"


def test_nothing_in_stream_patches_on_import() -> None:
    code = (
        "import pkgutil, importlib, stream, schemas\n"
        "from apache_beam.runners.portability import portable_runner\n"
        "from apache_beam.runners.worker import sdk_worker, statesampler\n"
        "before = (statesampler.StateSampler, sdk_worker.SHORT_ID_CACHE._last_short_id,\n"
        "          portable_runner.PortableRunner.start_and_replace_loopback_environments,\n"
        "          portable_runner.PipelineResult.metrics)\n"
        "for pkg in (stream, schemas):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "after = (statesampler.StateSampler, sdk_worker.SHORT_ID_CACHE._last_short_id,\n"
        "         portable_runner.PortableRunner.start_and_replace_loopback_environments,\n"
        "         portable_runner.PipelineResult.metrics)\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_an_unknown_beam_version_is_refused_with_what_to_do() -> None:
    patches.check(patches.PATCHES)  # the installed versions
    with pytest.raises(patches.PatchError) as refused:
        patches.check(patches.BEAM_PATCHES, beam_version="2.78.0")
    message = str(refused.value)
    assert "apache-beam 2.78.0" in message and "2.77.0" in message
    assert "--patches=off" in message and "pyproject.toml" in message
    patches.check((patches.RAW_MUTATION_ENTRIES,), beam_version="2.78.0")  # not a Beam patch
    patches.check((), beam_version="2.78.0", bigtable_version="3.0.0")  # nothing to patch


def test_an_unknown_bigtable_client_is_refused() -> None:
    assert client_patches.written_for(client_patches.installed_version())
    assert client_patches.written_for("2.42.0") and client_patches.written_for("2.50.9")
    assert not client_patches.written_for("2.51.0") and not client_patches.written_for("3.0")
    with pytest.raises(patches.PatchError, match=r"google-cloud-bigtable 2\.51\.0"):
        patches.check((patches.RAW_MUTATION_ENTRIES,), bigtable_version="2.51.0")


def test_the_replaced_beam_loop_is_the_one_this_code_was_written_against() -> None:
    source = inspect.getsource(PortableRunner.start_and_replace_loopback_environments)
    for line in (
        "env.urn == python_urns.EMBEDDED_PYTHON_LOOPBACK",
        "worker_pool_main.BeamFnExternalWorkerPoolServicer.start(",
        "use_process=use_loopback_process_worker",
        "env.payload = external_env.payload",
    ):
        assert line in source
    assert "use_process" in inspect.signature(BeamFnExternalWorkerPoolServicer.start).parameters
    assert callable(sdk_worker_main._get_state_cache_size_bytes)
    assert callable(sdk_worker_main._get_data_buffer_time_limit_ms)


def test_the_metrics_cache_is_the_one_the_fresh_metrics_patch_clears() -> None:
    source = inspect.getsource(portable_runner.PipelineResult.metrics)
    assert "if not self._metrics:" in source


def test_the_client_still_builds_requests_through_the_overridden_method() -> None:
    assert "_to_pb" in vars(RowMutationEntry)


def _proto(own_worker: bool):  # type: ignore[no-untyped-def]
    pipeline = beam.Pipeline(options=LOOPBACK)
    _ = (
        pipeline
        | beam.Create([])
        | Rollups(timedelta(seconds=60), timedelta(hours=1), own_worker=own_worker)
    )
    env = environments.Environment.from_options(LOOPBACK)
    return pipeline.to_runner_api(default_environment=env)


def _environment_of(proto, name: str) -> str:  # type: ignore[no-untyped-def]
    ids = {t.environment_id for t in proto.components.transforms.values() if name in t.unique_name}
    (only,) = ids - {""}
    return str(only)


def test_only_the_keyed_rollup_stages_get_an_environment_of_their_own() -> None:
    proto = _proto(own_worker=True)
    default = _environment_of(proto, "PreAggregate")
    for stage in ("Gate", "Accumulate", "TooLateLetters"):
        assert _environment_of(proto, stage) != default
    # One hinted environment, hence one worker process: its short ids may start from 1.
    assert len({_environment_of(proto, s) for s in ("Gate", "Accumulate", "TooLateLetters")}) == 1
    shared = _proto(own_worker=False)
    assert _environment_of(shared, "Gate") == _environment_of(shared, "PreAggregate")


def test_the_hinted_environment_becomes_a_pool_of_its_own() -> None:
    proto = _proto(own_worker=True)
    envs = proto.components.environments
    assert {e.urn for e in envs.values()} == {python_urns.EMBEDDED_PYTHON_LOOPBACK}
    cleanups = patches.worker_pools(proto, LOOPBACK)
    try:
        assert len(cleanups) == len(envs) == 2
        payloads = {e.payload for e in envs.values()}
        assert len(payloads) == 2  # two pools, two addresses
        assert {e.urn for e in envs.values()} == {"beam:env:external:v1"}
    finally:
        for cleanup in cleanups:
            cleanup()


def test_rollup_worker_is_resolved_once_for_the_runner() -> None:
    def worker(*flags: str) -> RollupWorker:
        return to_config(PipelineOptions(["--streaming", *flags])).rollup_worker

    assert worker("--runner=PrismRunner") is RollupWorker.PROCESS
    assert worker("--runner=PrismRunner", "--rollup_worker=thread") is RollupWorker.THREAD
    assert worker("--runner=PrismRunner", "--patches=off") is RollupWorker.THREAD
    assert worker("--runner=PrismRunner", "--rollups=off") is RollupWorker.THREAD
    assert worker("--runner=BundleBasedDirectRunner") is RollupWorker.THREAD
    assert worker() is RollupWorker.THREAD  # no runner chosen: nothing to patch for


def test_ingest_processes_are_resolved_once_for_the_runner() -> None:
    def processes(*flags: str) -> int:
        return to_config(PipelineOptions(["--streaming", *flags])).ingest_processes

    assert processes("--runner=PrismRunner") == 2
    assert processes("--runner=PrismRunner", "--rollups=off") == 2  # a worker process alone
    assert processes("--runner=PrismRunner", "--ingest_processes=1") == 1
    assert processes("--runner=PrismRunner", "--patches=off") == 1
    assert processes("--runner=BundleBasedDirectRunner") == 1
    assert processes() == 1


def test_a_second_ingest_process_is_refused_where_it_cannot_work() -> None:
    for flags, problem in (
        (["--runner=BundleBasedDirectRunner"], "--ingest_processes=2 needs Prism"),
        (["--runner=PrismRunner", "--patches=off"], "is a patch of Beam"),
    ):
        with pytest.raises(ConfigError, match=problem):
            to_config(PipelineOptions(["--streaming", "--ingest_processes=2", *flags]))


def test_the_flag_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(ConfigError, match="--rollup_worker=process needs rollups"):
        to_config(PipelineOptions(["--streaming", "--rollups=off", "--rollup_worker=process"]))
    with pytest.raises(ConfigError, match="--rollup_worker=process is for Prism"):
        to_config(
            PipelineOptions(
                [
                    "--streaming",
                    "--runner=DataflowRunner",
                    "--subscription=projects/p-123456/subscriptions/s",
                    "--rollup_worker=process",
                ]
            )
        )
    with pytest.raises(ConfigError, match="needs Prism, and the runner is BundleBasedDirectRunner"):
        to_config(
            PipelineOptions(
                ["--streaming", "--runner=BundleBasedDirectRunner", "--rollup_worker=process"]
            )
        )
    with pytest.raises(ConfigError, match="is a patch of Beam: drop it or --patches=on"):
        to_config(
            PipelineOptions(
                ["--streaming", "--runner=PrismRunner", "--rollup_worker=process", "--patches=off"]
            )
        )


def test_without_patches_prism_runs_show_no_frozen_status_line() -> None:
    off = to_config(PipelineOptions(["--streaming", "--runner=PrismRunner", "--patches=off"]))
    assert off.status_interval == timedelta(0) and not off.bigtable.raw_entries
    on = to_config(PipelineOptions(["--streaming", "--runner=PrismRunner"]))
    assert on.status_interval == timedelta(seconds=5) and on.bigtable.raw_entries


def test_bundles_start_and_end_without_a_sampler_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners.worker import bundle_processor
    from apache_beam.utils.counters import CounterFactory

    # The bundle processor looks the sampler class up in its module at each bundle.
    assert "statesampler.StateSampler(" in inspect.getsource(bundle_processor.BundleProcessor)
    monkeypatch.setattr(statesampler, "StateSampler", statesampler.StateSampler)  # restored
    monkeypatch.setattr(patches, "_applied", set())
    patches.apply((patches.SAMPLER_WITHOUT_THREAD,))
    sampler = statesampler.StateSampler("s", CounterFactory())
    threads = threading.active_count()
    sampler.start()
    assert threading.active_count() == threads  # no sampling thread
    assert statesampler.get_current_tracker() is sampler
    sampler.stop()  # returns at once: nothing to join
    assert sampler.finished and statesampler.get_current_tracker() is None
    sampler.stop_if_still_running()  # what a bundle's end calls: a no-op now


def test_the_launchers_metric_ids_leave_the_rollup_workers_range_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apache_beam.metrics import monitoring_infos

    info = monitoring_infos.int64_counter(monitoring_infos.ELEMENT_COUNT_URN, 1, pcollection="pc")
    monkeypatch.setattr(sdk_worker, "SHORT_ID_CACHE", sdk_worker.ShortIdCache())
    assert sdk_worker.SHORT_ID_CACHE.get_short_id(info) == "1"  # Beam's own, as in the child
    monkeypatch.setattr(sdk_worker, "SHORT_ID_CACHE", sdk_worker.ShortIdCache())
    patches.move_short_ids(patches.LAUNCHER_SHORT_IDS)
    patches.move_short_ids(patches.LAUNCHER_SHORT_IDS)  # idempotent
    assert sdk_worker.SHORT_ID_CACHE.get_short_id(info) == hex(patches.LAUNCHER_SHORT_IDS + 1)[2:]


def test_fresh_metrics_reads_the_job_service_at_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class _JobService:
        def __init__(self) -> None:
            self.calls = 0

        def GetJobMetrics(self, request: object) -> object:  # noqa: N802 - the gRPC method
            self.calls += 1
            return beam_job_api_pb2.GetJobMetricsResponse()

    service = _JobService()
    result = portable_runner.PipelineResult(service, "job", None, None)
    monkeypatch.setattr(
        portable_runner.PipelineResult, "metrics", portable_runner.PipelineResult.metrics
    )
    result.metrics()
    result.metrics()
    assert service.calls == 1  # Beam's own: the first answer, forever
    monkeypatch.setattr(patches, "_applied", set())
    patches.apply((patches.FRESH_METRICS,))
    result.metrics()
    result.metrics()
    assert service.calls == 3


def test_the_project_pins_the_versions_the_patches_were_written_for() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"apache-beam[gcp]=={patches.BEAM_VERSIONS[-1]}" in dependencies
    assert f"google-cloud-bigtable{client_patches.VERSIONS}" in dependencies
