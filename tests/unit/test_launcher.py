"""The launcher: its restart policy for failed local runs, and start-up refusals."""

import pytest

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


def test_a_rollup_worker_process_without_prism_fails_fast(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.launch import launcher, workers
    from stream.launch.runners import DIRECT, RunnerChoice

    installed: list[bool] = []
    monkeypatch.setattr(launcher, "choose_runner", lambda options: RunnerChoice(DIRECT, True, ""))
    monkeypatch.setattr(workers, "install", lambda: installed.append(True))
    assert launcher.run(["--streaming", "--rollup_worker=process"]) == 2
    assert "--rollup_worker=process needs Prism" in capsys.readouterr().err
    assert installed == []
