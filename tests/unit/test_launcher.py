"""The launcher: its restart policy for failed local runs, and start-up refusals."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from stream.launch.launcher import Restarts


def test_restarts_back_off_and_stop_at_the_limit() -> None:
    restarts = Restarts(limit=3)
    assert [restarts.next_delay(ran_for=1.0) for _ in range(4)] == [2.0, 4.0, 8.0, None]


def test_a_healthy_run_resets_the_count() -> None:
    restarts = Restarts(limit=2, healthy=600.0)
    assert restarts.next_delay(1.0) == 2.0
    assert restarts.next_delay(1.0) == 4.0
    assert restarts.next_delay(1.0) is None
    assert restarts.next_delay(601.0) == 2.0  # it ran long enough: a new series


def test_delays_are_capped_at_a_minute() -> None:
    restarts = Restarts(limit=10)
    assert max(restarts.next_delay(1.0) or 0 for _ in range(10)) == 60.0


def test_zero_disables_restarts() -> None:
    assert Restarts(limit=0).next_delay(1.0) is None


def _runner(monkeypatch: pytest.MonkeyPatch, name: str, native: bool) -> list[object]:
    """The launcher chooses `name`; returns the list the patches it applies go to."""
    from stream.launch import launcher, patches
    from stream.launch.runners import RunnerChoice

    def choose(options: PipelineOptions) -> RunnerChoice:
        options.view_as(StandardOptions).runner = name
        return RunnerChoice(name, native, "")

    applied: list[object] = []
    monkeypatch.setattr(launcher, "choose_runner", choose)
    monkeypatch.setattr(patches, "apply", applied.append)
    return applied


def test_a_rollup_worker_process_without_prism_fails_fast(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.launch import launcher
    from stream.launch.runners import DIRECT

    applied = _runner(monkeypatch, DIRECT, native=True)
    assert launcher.run(["--streaming", "--rollup_worker=process"]) == 2
    assert "--rollup_worker=process needs Prism" in capsys.readouterr().err
    assert applied == []


def test_an_unknown_beam_version_stops_the_start_before_anything_is_patched(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.launch import launcher, patches
    from stream.launch.options import PRISM

    applied = _runner(monkeypatch, PRISM, native=False)
    monkeypatch.setattr(patches, "BEAM_VERSIONS", ("2.70.0",))
    assert launcher.run(["--streaming"]) == 2
    err = capsys.readouterr().err
    assert "apache-beam 2.77.0 is installed" in err and "--patches=off" in err
    assert applied == []
