"""`summary`: what piled up in the dead letters, by kind, stage and schema, and the top errors.

It acknowledges nothing: every letter it read is released at the end (stream/deadletters/
subscription.py), so a summary changes nothing.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.base import format_rfc3339_millis
from stream.deadletters.fold import fold_error
from stream.deadletters.letters import Letter
from stream.deadletters.progress import LiveProgress
from stream.deadletters.selection import Selection
from stream.deadletters.subscription import DeadLetterSubscription

TOP_ERRORS = 10
ERROR_WIDTH = 110  # characters of an error shown in the table; --json has the whole text
NONE = "-"  # an empty kind, stage or schema in the table


@dataclass
class Group:
    """Letters of one (kind, stage, schema): how many, when, and one to look at."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    sample: str = ""  # a letter's message id

    def add(self, letter: Letter) -> None:
        """Count one more letter."""
        self.count += 1
        self.sample = self.sample or letter.message_id
        when = letter.publish_time
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)


def _time(moment: datetime | None) -> str:
    return format_rfc3339_millis(moment) if moment is not None else ""


@dataclass
class Summary:
    """The counts of one read of the subscription."""

    subscription: str
    letters: int = 0
    complete: bool = False
    seconds: float = 0.0
    groups: dict[tuple[str, str, str], Group] = field(default_factory=dict)
    errors: dict[tuple[str, str], Group] = field(default_factory=dict)  # (kind, folded error)
    redrive_counts: Counter[int] = field(default_factory=Counter)
    copies: int = 0  # letters of an original already counted (published twice): not counted
    _originals: set[tuple[str, str]] = field(default_factory=set)

    def add(self, letter: Letter) -> None:
        """Count one letter in its group, its folded error and its redrive count.

        Dead letters are published at least once: a publish whose answer was lost is sent
        again, and a crash between publish and ack dead-letters the redelivered original
        again. Both copies name the same original (`deadletter_message_id`): counted once.
        """
        original = (letter.original_message_id, letter.kind)
        if letter.original_message_id and original in self._originals:
            self.copies += 1
            return
        self._originals.add(original)
        self.letters += 1
        key = (letter.kind, letter.stage, letter.schema)
        self.groups.setdefault(key, Group()).add(letter)
        self.errors.setdefault((letter.kind, fold_error(letter.error)), Group()).add(letter)
        self.redrive_counts[letter.redrives()] += 1

    def kinds(self) -> dict[str, int]:
        """Letters per kind."""
        counts: Counter[str] = Counter()
        for (kind, _, _), group in self.groups.items():
            counts[kind] += group.count
        return dict(counts)

    def top_errors(self, top: int = TOP_ERRORS) -> list[tuple[str, str, Group]]:
        """(kind, folded error, group), most frequent first."""
        ranked = sorted(self.errors.items(), key=lambda item: (-item[1].count, item[0]))
        return [(kind, error, group) for (kind, error), group in ranked[:top]]

    def to_json(self, top: int = TOP_ERRORS) -> dict[str, Any]:
        """The summary as one JSON object (`--json`)."""
        ranked = sorted(self.groups.items(), key=lambda item: (-item[1].count, item[0]))
        return {
            "subscription": self.subscription,
            "letters": self.letters,
            "copies": self.copies,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "kinds": self.kinds(),
            "groups": [
                {
                    "kind": kind,
                    "stage": stage,
                    "schema": schema,
                    "count": group.count,
                    "first_publish_time": _time(group.first),
                    "last_publish_time": _time(group.last),
                    "sample_message_id": group.sample,
                }
                for (kind, stage, schema), group in ranked
            ],
            "errors": [
                {
                    "kind": kind,
                    "error": error,
                    "count": group.count,
                    "sample_message_id": group.sample,
                }
                for kind, error, group in self.top_errors(top)
            ],
            "redrive_counts": {str(n): c for n, c in sorted(self.redrive_counts.items())},
        }


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _short(text: str) -> str:
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 3] + "..."


def render(summary: Summary, top: int = TOP_ERRORS) -> str:
    """The summary for people: a header line, the groups, the most frequent errors."""
    how = (
        f"read in {summary.seconds:.1f} s"
        if summary.complete
        else f"PARTIAL: stopped at --timeout after {summary.seconds:.1f} s"
    )
    copies = f", and {summary.copies} copies counted once" if summary.copies else ""
    lines = [
        f"{summary.letters} dead letters in {summary.subscription} ({how}; none "
        f"acknowledged{copies})"
    ]
    if not summary.letters:
        return lines[0]
    data = summary.to_json(top)
    rows = [
        [
            g["kind"] or NONE,
            g["stage"] or NONE,
            g["schema"] or NONE,
            str(g["count"]),
            g["first_publish_time"],
            g["last_publish_time"],
            g["sample_message_id"],
        ]
        for g in data["groups"]
    ]
    header = ["kind", "stage", "schema", "letters", "first published", "last published", "sample"]
    lines += ["", *_table(header, rows, right={3})]
    errors = [
        [str(e["count"]), e["kind"] or NONE, e["sample_message_id"], _short(e["error"] or NONE)]
        for e in data["errors"]
    ]
    lines += ["", "most frequent errors (numbers and ids folded):"]
    lines += _table(["letters", "kind", "sample", "error"], errors, right={0})
    redriven = {n: c for n, c in summary.redrive_counts.items() if n}
    if redriven:
        shown = ", ".join(f"{c} redriven {n}x" for n, c in sorted(redriven.items()))
        lines += ["", f"redriven before: {shown}"]
    return "\n".join(lines)


def summarize(
    subscription: DeadLetterSubscription, selection: Selection, deadline: float
) -> Summary:
    """Read every letter (bounded by `deadline`), count the selected ones, release them all."""
    summary = Summary(subscription=subscription.path)
    with LiveProgress("summary") as progress:
        for batch in subscription.letters(deadline):
            for letter in batch:
                if selection.matches(letter):
                    summary.add(letter)
            progress.update(
                summary.letters, {"read": subscription.held, "selected": summary.letters}
            )
        summary.complete = subscription.complete
        summary.seconds = progress.elapsed()
    # Every letter goes back at once (ack deadline 0), not when its lease ends: other readers
    # (a redrive, verify) see them straight away, and a summary changes nothing.
    subscription.release_all()
    return summary
