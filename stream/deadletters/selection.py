"""Which dead letters a command acts on: kind, schema, stage, error text, publish-time range."""

from dataclasses import dataclass
from datetime import datetime

from stream.deadletters.letters import Letter
from stream.pipeline.messages import ErrorKind

# Notices, not failures: the message's row was stored (only its rollup excludes it), so a
# redrive only rewrites the same row and gets the same notice back. Redriven only by name.
NOTICE_KINDS = frozenset({str(ErrorKind.TOO_LATE)})


@dataclass(frozen=True, slots=True)
class Selection:
    """Letters matching every given criterion (an empty criterion matches everything).

    The time range is on the letter's own publish time, i.e. when the pipeline refused the
    message: every letter has one (a backfilled line or a message Pub/Sub forwarded itself has
    no `deadletter_publish_time`), and a period when the pipeline ran with a wrong catalog or
    rule maps onto it exactly, however far behind the pipeline was.
    """

    kinds: frozenset[str] = frozenset()
    schemas: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    error_contains: str = ""
    published_after: datetime | None = None  # inclusive
    published_before: datetime | None = None  # exclusive

    def matches(self, letter: Letter) -> bool:
        """Whether the letter meets every criterion."""
        return (
            (not self.kinds or letter.kind in self.kinds)
            and (not self.schemas or letter.schema in self.schemas)
            and (not self.stages or letter.stage in self.stages)
            and self.error_contains in letter.error
            and (self.published_after is None or letter.publish_time >= self.published_after)
            and (self.published_before is None or letter.publish_time < self.published_before)
        )

    def redrivable(self, letter: Letter) -> bool:
        """Selected for a redrive: matching, and not a notice unless its kind was named."""
        return self.matches(letter) and (
            letter.kind not in NOTICE_KINDS or letter.kind in self.kinds
        )
