"""RefusedError: a failure no retry and no restart can fix; the job stops and says what to change.

Raised where a call to Pub/Sub or Bigtable is refused for good (a deleted subscription, a
removed permission, a missing table). A runner reports a failed job as text, so the launcher
knows a refusal by MARKER in it and stops instead of restarting (stream/launch/launcher.py).
"""

MARKER = "refused for good:"


class RefusedError(RuntimeError):
    """`what` was refused; `fix` says what to change. Its text carries MARKER."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{MARKER} {what}. {fix}")
        self.what = what
        self.fix = fix


def refusal_in(text: str) -> str | None:
    """The refusal a failure's text reports (from MARKER to the end of its line), if any."""
    start = text.find(MARKER)
    if start < 0:
        return None
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)]
