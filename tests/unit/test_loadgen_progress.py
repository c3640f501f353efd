"""The publish progress: plain lines in a log, rich's bar on a terminal, the summary line."""

import io

from loadgen.report import Progress, PublishStats


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_it_prints_plain_lines_and_the_summary() -> None:
    out = io.StringIO()
    progress = Progress(500, 1000, None, stream=out, every=0.0)
    progress.update(PublishStats(sent=400, errors=2, retries=2))
    summary = progress.finish(PublishStats(sent=1000, retries=2, errors=2))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("publish: sent=400 rate=")
    assert lines[0].endswith("(asked 500/s) errors=2 retries=2 failed=0")
    assert lines[-1] == summary
    assert summary.startswith("publish: sent=1000 failed=0 retries=2 in ")
    assert summary.endswith("(asked 500/s)")


def test_on_a_terminal_it_draws_a_bar_with_the_counts() -> None:
    out = _Terminal()
    progress = Progress(500, 1000, None, stream=out)
    progress.update(PublishStats(sent=500))
    progress.finish(PublishStats(sent=1000))
    text = out.getvalue()
    assert "━" in text  # rich's bar
    assert "sent=1000" in text and "(asked 500/s)" in text
    assert text.rstrip().splitlines()[-1].endswith("(asked 500/s)")  # after the cursor codes
    assert "publish: sent=1000 failed=0" in text.rstrip().splitlines()[-1]
