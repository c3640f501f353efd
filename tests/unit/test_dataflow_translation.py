"""The real pipeline as DataflowRunner translates it, by a dry run that never leaves this process.

What a `--dry_run=True` DataflowRunner run does (Beam 2.77, read in the installed source):
`beam.Pipeline(options)` validates the options; `run()` applies Dataflow's overrides, snapshots
the portable proto (`to_runner_api`), stages nothing, builds `apiclient.Job` (name, type,
labels) and returns a DONE result before `DataflowApplicationClient`, which is where
credentials and the Dataflow API would come in. Nothing touches the network as long as
`--temp_location` (or `--staging_location`) is a valid GCS path: with an invalid one (a bucket
name of fewer than 3 characters, such as `gs://b/tmp`) the validator looks up a default bucket
`dataflow-staging-<region>-<hash>` with GcsIO, first spending ~25 s on Application Default
Credentials (retried by Beam, GCE metadata probes) and then 120 s on storage.googleapis.com.
`--no_auth`, NO_GCE_CHECK or GCE_METADATA_HOST do not prevent that; a valid bucket name does.

The `_offline` guard below makes any connection attempt fail the test at once instead of
hanging in those retries.
"""

import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.runner import PipelineState
from google.cloud import dataflow

from stream.launch.launcher import source_for
from stream.launch.options import PRISM, to_config
from stream.launch.runners import RunnerChoice, choose_runner
from stream.pipeline.build import Source, build_pipeline
from stream.pipeline.config import IngestConfig
from stream.pipeline.io.pubsub_native import NativeSource
from stream.pipeline.io.pubsub_pull import PullSource
from stream.pipeline.io.sink import BigtableSink

SUBSCRIPTION = "projects/some-project-id/subscriptions/request_buffer-sub"
DATAFLOW_FLAGS = [
    "--runner=DataflowRunner",
    "--project=some-project-id",
    "--region=europe-west1",
    # Must be valid GCS paths (bucket names have 3-63 characters): see the module docstring.
    "--temp_location=gs://some-bucket/tmp",
    "--staging_location=gs://some-bucket/staging",
    "--streaming",
    "--dry_run=True",
    "--sdk_location=container",  # same as `default` in Beam 2.77: nothing is staged
    # Not needed to stay offline, but to be deterministic and quick: a fixed job name instead
    # of beamapp-<user>-<time>-<random>, and no `pip freeze` subprocess recording the
    # submission environment (an artifact that does not change the pipeline graph).
    "--job_name=dry-run-translation",
    "--experiments=disable_logging_submission_environment",
    f"--subscription={SUBSCRIPTION}",
    "--id_label=message_id",
]

# build_pipeline's top-level stages, in order. Dataflow's `--update` matches steps by these
# names: renaming one needs a --transform_name_mapping, so this list changes only on purpose.
TOP_LEVEL_STEPS = [
    "ReadEvents",
    "ParseAndValidate",
    "AssignEventTime",
    "WriteRows",
    "DeadLetter",
    "Acknowledge",
    "Rollups",
    "WriteRollups",
    "RollupDeadLetter",
]
NATIVE_READ_STEP = "ReadEvents/ReadFromPubSub/Read"

PUBSUB_READ = common_urns.composites.PUBSUB_READ.urn
PAR_DO = common_urns.primitives.PAR_DO.urn
# Leaf transforms Dataflow (streaming, Runner v2) executes: the Pub/Sub read natively in the
# service (acks after its durable commit, dedups by id_label), a ParDo in the Python SDK
# harness, and the primitives it implements itself. A new URN here is a decision: check that
# Dataflow runs it before adding it.
DATAFLOW_LEAVES = frozenset(
    {
        PUBSUB_READ,
        PAR_DO,
        common_urns.primitives.FLATTEN.urn,
        common_urns.primitives.GROUP_BY_KEY.urn,
        common_urns.primitives.ASSIGN_WINDOWS.urn,
    }
)
# Composites are structure only (Dataflow runs their leaves). Beam serialises ReadFromPubSub
# as a pickled composite (it has no URN of its own); '' is the pipeline's root.
COMPOSITES = frozenset(
    {
        "",
        python_urns.GENERIC_COMPOSITE_TRANSFORM,
        python_urns.PICKLED_TRANSFORM,
    }
)
# Never in this pipeline on Dataflow: an Impulse is how an SDK-side source starts (the pull
# source, PeriodicImpulse): with it the read would run in the SDK instead of Dataflow's own
# Pub/Sub reader; TestStream is for tests; a Read of a Beam source would become an SDF wrapper.
FORBIDDEN = frozenset(
    {
        common_urns.primitives.IMPULSE.urn,
        common_urns.primitives.TEST_STREAM.urn,
        common_urns.deprecated_primitives.READ.urn,
    }
)


class NetworkUsedError(BaseException):
    """A connection attempt during the dry run.

    A BaseException on purpose: Beam's retry decorators and google-auth catch Exception and
    would retry for minutes (or connect anonymously) instead of failing the test.
    """


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise NetworkUsedError(f"the Dataflow dry run tried to use the network: {args!r}")


class Translation(NamedTuple):
    """The dry run's result and the portable pipeline Dataflow would receive."""

    result: Any
    proto: beam_runner_api_pb2.Pipeline

    @property
    def transforms(self) -> dict[str, beam_runner_api_pb2.PTransform]:
        return dict(self.proto.components.transforms)

    def by_name(self, unique_name: str) -> beam_runner_api_pb2.PTransform:
        matches = [t for t in self.transforms.values() if t.unique_name == unique_name]
        assert len(matches) == 1, f"{unique_name}: {len(matches)} transforms"
        return matches[0]

    def leaves(self) -> list[beam_runner_api_pb2.PTransform]:
        return [t for t in self.transforms.values() if not t.subtransforms]

    def urns(self) -> Counter[str]:
        return Counter(t.spec.urn for t in self.transforms.values())

    def top_level_steps(self) -> list[str]:
        (root_id,) = self.proto.root_transform_ids
        root = self.proto.components.transforms[root_id]
        return [self.proto.components.transforms[t].unique_name for t in root.subtransforms]


def dry_run(workdir: Path, *extra_flags: str, pull_source: bool = False) -> Translation:
    """Build the pipeline exactly as stream.launch.launcher does for Dataflow, and dry-run it.

    Offline by construction: socket connects and DNS lookups raise. Beam's temporary
    directories (one of them never removed) go to `workdir`.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket.socket, "connect_ex", _refuse)
        patch.setattr(socket, "getaddrinfo", _refuse)
        patch.setattr(tempfile, "tempdir", str(workdir))
        options = PipelineOptions([*DATAFLOW_FLAGS, *extra_flags])
        config = to_config(options)
        choice = choose_runner(options)
        assert choice == RunnerChoice(name="DataflowRunner", native_pubsub=True)
        source: Source = PullSource(config.pubsub) if pull_source else source_for(choice, config)
        pipeline = beam.Pipeline(options=options)
        build_pipeline(
            pipeline,
            source,
            BigtableSink(config.bigtable, config.pubsub.dead_letter_topic),
            config,
        )
        result = pipeline.run()
    return Translation(result=result, proto=result.job.proto_pipeline)


def problems(translation: Translation) -> list[str]:
    """Everything in the translated pipeline that Dataflow should not be given."""
    found = []
    for transform in translation.transforms.values():
        urn, name = transform.spec.urn, transform.unique_name
        if urn in FORBIDDEN:
            found.append(f"{name}: forbidden {urn}")
        elif transform.subtransforms and urn not in COMPOSITES:
            found.append(f"{name}: unexpected composite {urn}")
        elif not transform.subtransforms and urn not in DATAFLOW_LEAVES:
            found.append(f"{name}: not in the Dataflow allow-list: {urn}")
        if urn == PAR_DO:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if payload.restriction_coder_id:  # a splittable DoFn (the pull source is one)
                found.append(f"{name}: splittable DoFn")
    return found


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Translation]:
    yield dry_run(tmp_path_factory.mktemp("dataflow"), "--timestamp_attribute=event_ts")


def test_dry_run_is_a_streaming_job(job: Translation) -> None:
    assert job.result.state == PipelineState.DONE
    assert job.result.job.proto.type_ == dataflow.JobType.JOB_TYPE_STREAMING
    assert job.result.job.proto.name == "dry-run-translation"
    unbounded = beam_runner_api_pb2.IsBounded.UNBOUNDED
    read_output = next(iter(job.by_name(NATIVE_READ_STEP).outputs.values()))
    assert job.proto.components.pcollections[read_output].is_bounded == unbounded


def test_top_level_steps_are_the_pipeline_stages(job: Translation) -> None:
    assert job.top_level_steps() == TOP_LEVEL_STEPS


def test_pubsub_read_is_dataflows_native_one(job: Translation) -> None:
    reads = [t for t in job.transforms.values() if t.spec.urn == PUBSUB_READ]
    assert [t.unique_name for t in reads] == [NATIVE_READ_STEP]
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(reads[0].spec.payload)
    assert payload.subscription == SUBSCRIPTION
    assert payload.topic == ""
    assert payload.id_attribute == "message_id"
    assert payload.timestamp_attribute == "event_ts"
    assert payload.with_attributes is True


def test_only_transforms_dataflow_runs(job: Translation) -> None:
    assert problems(job) == []
    # No windowed aggregation: the rollups are two stateful ParDos (keyed state and timers,
    # which Dataflow streaming runs), so a late event is never dropped by a GroupByKey.
    assert set(job.urns()) == {
        "",
        python_urns.GENERIC_COMPOSITE_TRANSFORM,
        python_urns.PICKLED_TRANSFORM,
        PUBSUB_READ,
        PAR_DO,
    }
    assert {t.spec.urn for t in job.leaves()} == {PUBSUB_READ, PAR_DO}
    for step, state, timers in (
        ("Rollups/Gate", {"gate"}, {"ts-close"}),
        ("Rollups/Accumulate", {"window"}, {"ts-due", "ts-close"}),  # "ts-": Beam's prefix
    ):
        (leaf,) = [t for t in job.leaves() if t.unique_name.split("/")[:2] == step.split("/")]
        payload = beam_runner_api_pb2.ParDoPayload.FromString(leaf.spec.payload)
        assert set(payload.state_specs) == state, step
        assert set(payload.timer_family_specs) == timers, step
    environments = job.proto.components.environments.values()
    assert {env.urn for env in environments} == {common_urns.environments.DOCKER.urn}


def test_without_timestamp_attribute_the_steps_are_the_same(
    job: Translation, tmp_path: Path
) -> None:
    """Flag values change payloads, never step names (what `--update` relies on)."""
    plain = dry_run(tmp_path)
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(
        plain.by_name(NATIVE_READ_STEP).spec.payload
    )
    assert (payload.subscription, payload.id_attribute) == (SUBSCRIPTION, "message_id")
    assert payload.timestamp_attribute == ""
    names = sorted(t.unique_name for t in plain.transforms.values())
    assert names == sorted(t.unique_name for t in job.transforms.values())


def test_the_allow_list_rejects_the_pull_source(tmp_path: Path) -> None:
    """The check is not vacuous: the portable runners' source would be flagged on Dataflow."""
    pulled = dry_run(tmp_path, pull_source=True)
    found = problems(pulled)
    assert "ReadEvents/Start: forbidden beam:transform:impulse:v1" in found
    assert "ReadEvents/Pull: splittable DoFn" in found
    assert not any(t.spec.urn == PUBSUB_READ for t in pulled.transforms.values())


def _config() -> IngestConfig:
    return to_config(PipelineOptions(["--streaming", f"--subscription={SUBSCRIPTION}"]))


@pytest.mark.parametrize(
    ("runner", "source_type"),
    [("DataflowRunner", NativeSource), (PRISM, PullSource)],
)
def test_launcher_picks_the_source_for_the_runner(
    runner: str, source_type: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no Prism binary from this machine leaks in
    monkeypatch.setenv("STREAM_PRISM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRISM_LOCATION", raising=False)
    choice = choose_runner(PipelineOptions([f"--runner={runner}"]))
    assert choice.native_pubsub is (source_type is NativeSource)
    assert type(source_for(choice, _config())) is source_type


def test_source_for_follows_native_pubsub_of_the_choice() -> None:
    config = _config()
    assert isinstance(
        source_for(RunnerChoice("DataflowRunner", native_pubsub=True), config), NativeSource
    )
    assert isinstance(source_for(RunnerChoice(PRISM, native_pubsub=False), config), PullSource)
