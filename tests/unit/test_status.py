"""format_status: totals and per-interval rates; StatusPrinter's interval and failure path."""

import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from stream.launch import status
from stream.launch.status import StatusPrinter, counter_totals, format_status
from stream.pipeline import metrics

BEFORE = {"read": 50, "written": 40, "dead_lettered": 5, "acked": 45}
NOW = {"read": 100, "written": 90, "dead_lettered": 5, "acked": 95, "valid": 99}


def test_totals_and_rates() -> None:
    assert format_status(NOW, BEFORE, 5.0) == (
        "status: read=100 (10/s) written=90 (10/s) deadletter=5 (0/s) acked=95 (10/s)"
    )


def test_rates_are_rounded_to_whole_events() -> None:
    now = {"read": 10, "written": 2, "dead_lettered": 1, "acked": 0}
    assert format_status(now, {}, 3.0) == (
        "status: read=10 (3/s) written=2 (1/s) deadletter=1 (0/s) acked=0 (0/s)"
    )


def test_first_interval_counts_from_zero() -> None:
    assert format_status(NOW, {}, 2.0) == (
        "status: read=100 (50/s) written=90 (45/s) deadletter=5 (2/s) acked=95 (48/s)"
    )


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_no_elapsed_time_gives_zero_rates(seconds: float) -> None:
    assert format_status(NOW, BEFORE, seconds) == (
        "status: read=100 (0/s) written=90 (0/s) deadletter=5 (0/s) acked=95 (0/s)"
    )


def test_missing_counters_are_zero() -> None:
    assert format_status({}, {}, 1.0) == (
        "status: read=0 (0/s) written=0 (0/s) deadletter=0 (0/s) acked=0 (0/s)"
    )


def test_throttling_and_redeliveries_show_only_when_they_happened() -> None:
    now = {**NOW, "cumulativeThrottlingSeconds": 37, "redelivered_while_held": 2}
    assert format_status(now, BEFORE, 5.0) == (
        "status: read=100 (10/s) written=90 (10/s) deadletter=5 (0/s) acked=95 (10/s) "
        "throttled=37s redelivered=2"
    )
    exact = {**NOW, "cumulativeThrottlingSeconds": 0, "write_throttled_ms": 430}
    assert format_status(exact, BEFORE, 5.0).endswith(" throttled=0.4s")  # below one second
    quiet = {**NOW, "cumulativeThrottlingSeconds": 0, "redelivered_while_held": 0}
    assert format_status(quiet, BEFORE, 5.0) == format_status(NOW, BEFORE, 5.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_printer_emits_once_per_interval_and_survives_metrics_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    answers: list[dict[str, int] | Exception] = [
        {"read": 20, "written": 10},
        RuntimeError("job service gone"),
    ]

    def fake_totals(result: object) -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(status, "counter_totals", fake_totals)
    lines: list[str] = []
    printer = StatusPrinter(result=object(), interval=5.0, emit=lines.append)

    clock.now = 1004.9
    printer.tick()
    assert lines == []
    clock.now = 1010.0
    printer.tick()
    clock.now = 1012.0
    printer.tick()  # too soon again
    clock.now = 1015.0
    printer.tick()
    assert lines == [
        "status: read=20 (2/s) written=10 (1/s) deadletter=0 (0/s) acked=0 (0/s)",
        "status: metrics unavailable (job service gone)",
        "status: read=20 (0/s) written=10 (0/s) deadletter=0 (0/s) acked=0 (0/s)",
    ]


def test_printer_with_zero_interval_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    lines: list[str] = []
    printer = StatusPrinter(result=object(), interval=0, emit=lines.append)
    clock.now = 5000.0
    printer.tick()
    assert lines == []


class _ThrottledFn(beam.DoFn):
    """Counts like the write DoFns: its own counters, throttling under its class's namespace."""

    def __init__(self) -> None:
        self._written = metrics.counter(metrics.WRITTEN)
        self._throttled = beam.metrics.Metrics.counter(_ThrottledFn, metrics.THROTTLING_SECONDS)
        self._elsewhere = beam.metrics.Metrics.counter("other", "written")

    def process(self, element: int) -> None:
        self._written.inc()
        self._throttled.inc(element)
        self._elsewhere.inc(1000)


def test_counter_totals_reads_throttling_from_any_namespace() -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner"]))
    _ = pipeline | beam.Create([1, 2, 4]) | beam.ParDo(_ThrottledFn())
    result = pipeline.run()
    result.wait_until_finish()
    totals = counter_totals(result)
    assert totals == {"written": 3, "cumulativeThrottlingSeconds": 7}
