"""The SDK workers of a Prism run: quicker bundle ends; the rollup stages in a worker of their own.

Pins the Beam code stream/launch/workers.py replaces, checks that only the hinted environment
becomes a process pool, and that the flag is refused where it cannot work.
"""

import inspect
from datetime import timedelta

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.transforms import environments

from stream.launch import workers
from stream.launch.options import ConfigError, to_config
from stream.pipeline.rollups.transform import Rollups

LOOPBACK = PipelineOptions(["--environment_type=LOOPBACK"])


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


def test_only_the_keyed_rollup_stages_get_an_environment_of_their_own() -> None:
    proto = _proto(own_worker=True)
    default = _environment_of(proto, "PreAggregate")
    for stage in ("Gate", "Accumulate", "TooLateLetters"):
        assert _environment_of(proto, stage) != default
    assert len({_environment_of(proto, s) for s in ("Gate", "Accumulate")}) == 1
    shared = _proto(own_worker=False)
    assert _environment_of(shared, "Gate") == _environment_of(shared, "PreAggregate")


def test_the_hinted_environment_becomes_a_pool_of_its_own() -> None:
    proto = _proto(own_worker=True)
    envs = proto.components.environments
    assert {e.urn for e in envs.values()} == {python_urns.EMBEDDED_PYTHON_LOOPBACK}
    cleanups = workers._worker_pools(proto, LOOPBACK)
    try:
        assert len(cleanups) == len(envs) == 2
        payloads = {e.payload for e in envs.values()}
        assert len(payloads) == 2  # two pools, two addresses
        assert {e.urn for e in envs.values()} == {"beam:env:external:v1"}
    finally:
        for cleanup in cleanups:
            cleanup()


def test_the_flag_is_refused_without_rollups_or_on_dataflow() -> None:
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
    config = to_config(PipelineOptions(["--streaming", "--rollup_worker=process"]))
    assert config.rollup_worker == "process"
    assert to_config(PipelineOptions(["--streaming"])).rollup_worker == "auto"
    assert to_config(PipelineOptions(["--streaming", "--rollups=off"])).rollup_worker == "thread"


def test_bundles_end_within_ten_ms_of_their_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners.worker import bundle_processor, statesampler
    from apache_beam.utils.counters import CounterFactory

    # The bundle processor looks the sampler class up in its module at each bundle.
    assert "statesampler.StateSampler(" in inspect.getsource(bundle_processor.BundleProcessor)
    monkeypatch.setattr(statesampler, "StateSampler", statesampler.StateSampler)  # restored
    before = statesampler.StateSampler("s", CounterFactory())
    workers.quicker_bundle_ends()
    after = statesampler.StateSampler("s", CounterFactory())
    assert (before.sampling_period_ms, after.sampling_period_ms) == (200, 10)
    after.start()
    after.stop()  # still a working sampler


def test_each_worker_process_names_its_metrics_from_a_range_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from apache_beam.metrics import monitoring_infos
    from apache_beam.runners.worker import sdk_worker

    from stream.pipeline import monitoring_ids

    info = monitoring_infos.int64_counter(monitoring_infos.ELEMENT_COUNT_URN, 1, pcollection="pc")
    monkeypatch.setattr(sdk_worker, "SHORT_ID_CACHE", sdk_worker.ShortIdCache())
    monkeypatch.delenv(monitoring_ids.SEPARATE_IDS, raising=False)
    monitoring_ids.separate_short_ids()
    assert sdk_worker.SHORT_ID_CACHE.get_short_id(info) == "1"  # Beam's own: not asked for

    monkeypatch.setattr(sdk_worker, "SHORT_ID_CACHE", sdk_worker.ShortIdCache())
    monkeypatch.setenv(monitoring_ids.SEPARATE_IDS, "1")
    monitoring_ids.separate_short_ids()
    monitoring_ids.separate_short_ids()  # idempotent
    assert sdk_worker.SHORT_ID_CACHE.get_short_id(info) == hex((os.getpid() << 32) + 1)[2:]
