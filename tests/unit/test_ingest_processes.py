"""The pipeline as the launcher builds it for Prism: a second ingest in the worker process.

Built, not run: the portable proto says in which environment each transform runs, and a
transform's environment is its process (the resource-hinted one is the worker process).
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from stream.launch.options import to_config
from stream.pipeline.build import build_pipeline
from stream.pipeline.io.pubsub_pull import PullSource
from stream.pipeline.io.sink import BigtableSink


def _environments(*flags: str) -> dict[str, str]:
    """Each leaf transform's unique name -> the id of the environment it names."""
    options = PipelineOptions(["--streaming", "--runner=PrismRunner", *flags])
    config = to_config(options)
    pipeline = beam.Pipeline(options=options)
    second = PullSource(config.pubsub, leads=False) if config.ingest_processes > 1 else None
    sink = BigtableSink(config.bigtable, config.pubsub.dead_letter_topic)
    build_pipeline(pipeline, PullSource(config.pubsub), sink, config, second)
    proto: beam_runner_api_pb2.Pipeline = pipeline.to_runner_api()
    return {
        t.unique_name: t.environment_id
        for t in proto.components.transforms.values()
        if not t.subtransforms and t.environment_id
    }


def test_the_second_ingest_runs_its_whole_sentence_in_the_worker_process() -> None:
    envs = _environments()
    first = envs["ReadEvents/Pull"]
    second = envs["SecondProcess/ReadEvents/Pull"]
    assert first != second
    for name, env in envs.items():
        if name.startswith("SecondProcess/"):
            assert env == second, name  # read -> write -> ack fused in the worker process
    # Each ingest pre-aggregates its own events where it runs: no event crosses processes.
    assert envs["Rollups/PreAggregate"] == first
    assert envs["Rollups/PreAggregate2"] == second
    # The keyed rollup stages share the worker process with the second ingest.
    assert envs["Rollups/Gate/ParDo(Gate)"] == envs["Rollups/Accumulate"] == second


def test_the_first_ingest_keeps_its_step_names() -> None:
    one = set(_environments("--ingest_processes=1"))
    two = set(_environments())
    assert one <= two  # nothing of the single-process pipeline was renamed
    assert {name for name in two - one if not name.startswith("SecondProcess/")} == {
        "Rollups/PreAggregate2",
        "Rollups/Merge",
    }
    assert not any(n.startswith("SecondProcess") for n in one)


def test_with_rollups_off_the_second_ingest_has_the_worker_process_alone() -> None:
    envs = _environments("--rollups=off")
    second = {env for name, env in envs.items() if name.startswith("SecondProcess/")}
    first = {env for name, env in envs.items() if not name.startswith("SecondProcess/")}
    assert len(second) == 1 and not second & first
