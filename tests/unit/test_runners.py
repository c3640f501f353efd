"""find_prism / choose_runner: explicit runners kept, Prism preferred, a loud fallback.

Every test runs with HOME, STREAM_PRISM_CACHE and PRISM_LOCATION pointing into tmp_path, and
with the GitHub reachability check replaced, so nothing on this machine or network leaks in.
"""

import logging
import stat
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from stream.launch import runners
from stream.launch.runners import (
    JOB_STREAM_SECONDS,
    RunnerChoice,
    choose_runner,
    find_prism,
    prism_cache,
)


class _Downloads:
    """Stands in for `_beam_can_download_prism`, recording whether it was asked."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable
        self.calls = 0

    def __call__(self, timeout: float = 3.0) -> bool:
        self.calls += 1
        return self.reachable


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STREAM_PRISM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRISM_LOCATION", raising=False)
    return home


@pytest.fixture
def offline(home: Path, monkeypatch: pytest.MonkeyPatch) -> _Downloads:
    downloads = _Downloads(reachable=False)
    monkeypatch.setattr(runners, "_beam_can_download_prism", downloads)
    return downloads


def executable(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def cached_binary(tmp_path: Path) -> Path:
    return executable(tmp_path / "cache" / "v2.77.0" / "prism-p1")


def test_prism_cache_is_per_beam_version(tmp_path: Path, home: Path) -> None:
    assert prism_cache() == tmp_path / "cache" / "v2.77.0" / "prism-p1"


def test_prism_cache_default_is_under_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_PRISM_CACHE")
    assert prism_cache() == home / ".cache" / "stream-ingest" / "prism" / "v2.77.0" / "prism-p1"


def test_no_binary_anywhere(home: Path) -> None:
    assert find_prism() is None


def test_prism_location_env_wins(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_binary(tmp_path)
    mine = executable(tmp_path / "bin" / "my-prism")
    monkeypatch.setenv("PRISM_LOCATION", str(mine))
    assert find_prism() == mine


def test_project_cache_is_found(tmp_path: Path, home: Path) -> None:
    assert find_prism() is None
    assert find_prism() is None  # nothing created as a side effect
    binary = cached_binary(tmp_path)
    assert find_prism() == binary


def test_beam_cache_is_the_last_resort(home: Path) -> None:
    binary = executable(home / ".apache_beam" / "cache" / "prism" / "bin" / "prism")
    assert find_prism() == binary


def test_unusable_candidates_are_skipped(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = executable(tmp_path / "bin" / "prism-noexec", mode=0o644)
    monkeypatch.setenv("PRISM_LOCATION", str(not_executable))
    directory = tmp_path / "cache" / "v2.77.0" / "prism-p1"
    directory.mkdir(parents=True)  # a directory is "executable" but not a binary
    assert directory.stat().st_mode & stat.S_IXUSR
    assert find_prism() is None
    monkeypatch.setenv("PRISM_LOCATION", str(tmp_path / "missing"))
    assert find_prism() is None


@pytest.mark.parametrize(
    ("runner", "native"),
    [
        ("DataflowRunner", True),
        ("DirectRunner", True),
        ("BundleBasedDirectRunner", True),
        ("FlinkRunner", False),
    ],
)
def test_explicit_runner_is_kept(
    runner: str, native: bool, tmp_path: Path, offline: _Downloads
) -> None:
    cached_binary(tmp_path)
    options = PipelineOptions([f"--runner={runner}"])
    assert choose_runner(options) == RunnerChoice(name=runner, native_pubsub=native, note="")
    assert options.view_as(StandardOptions).runner == runner
    assert options.view_as(PrismRunnerOptions).prism_location is None
    assert options.view_as(PortableOptions).environment_type is None
    assert offline.calls == 0


def test_explicit_prism_gets_the_cached_binary_and_loopback(
    tmp_path: Path, offline: _Downloads
) -> None:
    binary = cached_binary(tmp_path)
    options = PipelineOptions(["--runner=PrismRunner"])
    choice = choose_runner(options)
    assert choice == RunnerChoice("PrismRunner", native_pubsub=False, note=f"prism at {binary}")
    assert options.view_as(PrismRunnerOptions).prism_location == str(binary)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    # Not Beam's 300 s: it is also the deadline of the job's state and message streams.
    assert options.view_as(PortableOptions).job_server_timeout == JOB_STREAM_SECONDS
    assert offline.calls == 0


def test_explicit_prism_location_and_environment_are_kept(
    tmp_path: Path, offline: _Downloads
) -> None:
    cached_binary(tmp_path)
    options = PipelineOptions(
        [
            "--runner=PrismRunner",
            "--prism_location=/opt/prism",
            "--environment_type=DOCKER",
            "--job_server_timeout=60",
        ]
    )
    assert choose_runner(options).note == "prism at /opt/prism"
    assert options.view_as(PrismRunnerOptions).prism_location == "/opt/prism"
    assert options.view_as(PortableOptions).environment_type == "DOCKER"
    assert options.view_as(PortableOptions).job_server_timeout == 60


def test_no_runner_with_binary_chooses_prism(tmp_path: Path, offline: _Downloads) -> None:
    binary = cached_binary(tmp_path)
    options = PipelineOptions([])
    assert choose_runner(options) == RunnerChoice("PrismRunner", False, f"prism at {binary}")
    assert options.view_as(StandardOptions).runner == "PrismRunner"
    assert options.view_as(PrismRunnerOptions).prism_location == str(binary)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"


def test_no_runner_no_binary_but_downloadable_chooses_prism(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads = _Downloads(reachable=True)
    monkeypatch.setattr(runners, "_beam_can_download_prism", downloads)
    options = PipelineOptions([])
    choice = choose_runner(options)
    assert (choice.name, choice.native_pubsub) == ("PrismRunner", False)
    assert options.view_as(PrismRunnerOptions).prism_location is None  # Beam downloads it
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    assert downloads.calls == 1


def test_no_runner_no_binary_offline_falls_back_with_a_warning(
    offline: _Downloads, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream.launch.runners")
    options = PipelineOptions([])

    choice = choose_runner(options)

    assert choice == RunnerChoice("BundleBasedDirectRunner", native_pubsub=True, note="")
    assert options.view_as(StandardOptions).runner == "BundleBasedDirectRunner"
    assert options.view_as(PortableOptions).environment_type is None
    assert offline.calls == 1
    warnings = [r for r in caplog.records if r.name == "stream.launch.runners"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    text = warnings[0].getMessage()
    assert "Falling back to the BundleBasedDirectRunner" in text
    assert "acknowledges messages when they are read, before they are written" in text
    assert "make prism" in text


def test_no_warning_when_prism_is_chosen(
    tmp_path: Path, offline: _Downloads, caplog: pytest.LogCaptureFixture
) -> None:
    cached_binary(tmp_path)
    caplog.set_level(logging.WARNING, logger="stream.launch.runners")
    choose_runner(PipelineOptions([]))
    assert [r for r in caplog.records if r.name == "stream.launch.runners"] == []


@pytest.mark.parametrize("runner", ["prism", "prismrunner"])
def test_prism_runner_alias_gets_the_cached_binary(
    runner: str, tmp_path: Path, offline: _Downloads
) -> None:
    binary = cached_binary(tmp_path)
    options = PipelineOptions([f"--runner={runner}"])
    choose_runner(options)
    assert options.view_as(PrismRunnerOptions).prism_location == str(binary)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"


def test_makefile_builds_the_binary_the_runner_looks_for() -> None:
    # `make prism` writes $(PRISM); choose_runner looks for prism_cache(): same file name.
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    assert f"/v$(BEAM_VERSION)/{runners.PRISM_BINARY_NAME}\n" in makefile
