"""`redrive`: selected letters back to the input topic as their original messages.

Each letter is republished with its original bytes and attributes (envelope unwrapped, every
`deadletter_*` attribute removed) plus `redrive_count`, and acknowledged only once Pub/Sub
confirmed the publish. A kill at any point loses nothing: an unacknowledged letter stays in
the subscription, and a letter republished twice becomes the same row (rows are keyed and
timestamped by the event, so a rewrite changes nothing).
"""

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from stream.deadletters.letters import Letter
from stream.deadletters.progress import LiveProgress
from stream.deadletters.selection import Selection
from stream.deadletters.subscription import PULL_MAX, DeadLetterSubscription
from stream.pipeline.io.deadletter_topic import publish_chunks, publish_messages
from stream.pipeline.io.pubsub_calls import pubsub_retry
from stream.pipeline.letters import (
    MAX_ATTRIBUTES,
    REDRIVE_COUNT_ATTRIBUTE,
    EnvelopeError,
    redrive_count,
)

DEFAULT_MAX_REDRIVES = 3
PUBLISH_TIMEOUT_SECONDS = 60.0
# The transient errors the pipeline retries; a retry after a lost answer may publish twice,
# which is harmless here (the same row).
PUBLISH_RETRY = pubsub_retry(PUBLISH_TIMEOUT_SECONDS)
NOTES_KEPT = 20


class CannotRedriveError(ValueError):
    """The letter cannot go back as it is (an unreadable envelope, no room for the counter)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A letter's original message, as it is republished."""

    letter: Letter
    data: bytes
    attributes: dict[str, str]
    round: int  # its redrive_count now: 1 for the first redrive


def outgoing(letter: Letter) -> Outgoing:
    """The letter's original message with its redrive counter one higher.

    Pub/Sub allows 100 attributes; the emulator accepts more, so this checks it here: an
    original with 100 attributes of its own (it came back in an envelope) has no room left.
    """
    try:
        data, attributes = letter.original()
    except EnvelopeError as exc:
        raise CannotRedriveError(str(exc)) from None
    round_ = redrive_count(attributes) + 1
    attributes[REDRIVE_COUNT_ATTRIBUTE] = str(round_)
    if len(attributes) > MAX_ATTRIBUTES:
        raise CannotRedriveError(
            f"its {len(attributes) - 1} original attributes leave no room for "
            f"{REDRIVE_COUNT_ATTRIBUTE} (Pub/Sub allows {MAX_ATTRIBUTES})"
        )
    return Outgoing(letter, data, attributes, round_)


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    """What to redrive, where, and how (the command's flags)."""

    topic: str
    selection: Selection = field(default_factory=Selection)
    max_redrives: int = DEFAULT_MAX_REDRIVES
    drop_exhausted: bool = False
    dry_run: bool = False
    limit: int | None = None
    rate: float | None = None  # letters per second at most


@dataclass
class RedriveReport:
    """Counts of one run; `left` letters are still in the subscription."""

    read: int = 0
    matched: int = 0
    sent: int = 0  # republished, confirmed and acknowledged (dry run: would be sent)
    failed: int = 0  # the publish failed: the letter stays
    exhausted: int = 0  # at --max_redrives: not sent again
    dropped: int = 0  # exhausted and acknowledged (--drop-exhausted)
    refused: int = 0  # cannot go back as it is: stays
    returned: int = 0  # dead-lettered again during this run: left for the next one
    seconds: float = 0.0
    sending_seconds: float = 0.0  # until the last confirmed publish: what the rate is over
    ended: str = ""
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep the first few things to report."""
        if len(self.notes) < NOTES_KEPT:
            self.notes.append(text)

    @property
    def ok(self) -> bool:
        """Every selected letter that could go was sent."""
        return self.failed == self.refused == 0

    def counts(self) -> dict[str, int]:
        """The counters, for the progress line."""
        return {
            "read": self.read,
            "matched": self.matched,
            "sent": self.sent,
            "failed": self.failed,
            "exhausted": self.exhausted,
            "refused": self.refused,
        }

    def line(self, dry_run: bool) -> str:
        """The closing summary line.

        The rate is over the time spent sending: a run ends with two empty pulls (about 4 s on
        the emulator), which say nothing about how fast letters go back.
        """
        rate = self.sent / max(self.sending_seconds, 1e-9) if self.sent else 0.0
        left = self.read - (0 if dry_run else self.sent + self.dropped)
        sent = "would_send" if dry_run else "sent"
        return (
            f"redrive{' (dry run)' if dry_run else ''}: read={self.read} matched={self.matched} "
            f"{sent}={self.sent} failed={self.failed} exhausted={self.exhausted} "
            f"dropped={self.dropped} refused={self.refused} returned={self.returned} "
            f"left={left} in {self.seconds:.1f}s ({rate:.0f} letters/s; {self.ended})"
        )


def publish(
    publisher: pubsub_v1.PublisherClient, topic: str, messages: list[Outgoing]
) -> tuple[list[tuple[Outgoing, str]], list[tuple[Outgoing, str]]]:
    """Publish and wait: ([(message, new message id)], [(message, error)]).

    One Publish request per chunk with the pipeline's own dead-letter publish (the plain API
    method: see `publish_messages`); its answer lists the new message ids in order.
    """
    sent: list[tuple[Outgoing, str]] = []
    failed: list[tuple[Outgoing, str]] = []
    plain = [(m.data, m.attributes) for m in messages]
    for indexes in publish_chunks(plain):
        chunk = [messages[i] for i in indexes]
        try:
            ids = publish_messages(
                publisher, topic, [plain[i] for i in indexes], PUBLISH_RETRY,
                PUBLISH_TIMEOUT_SECONDS,
            )  # fmt: skip
        except gexc.GoogleAPIError as exc:
            failed += [(m, f"{type(exc).__name__}: {exc}") for m in chunk]
            continue
        sent += list(zip(chunk, ids, strict=True))
    return sent, failed


def _would_send(message: Outgoing) -> str:
    letter = message.letter
    return (
        f"would send letter {letter.message_id} ({letter.kind or '-'}, original "
        f"{letter.original_message_id or '-'}) as redrive {message.round}: "
        f"{len(message.data)} bytes, attributes {json.dumps(message.attributes, sort_keys=True)}"
    )


class _Pace:
    """At most `rate` letters per second on average (None: as fast as it goes)."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._start = time.monotonic()

    def wait(self, done: int) -> None:
        if self._rate:
            time.sleep(max(0.0, self._start + done / self._rate - time.monotonic()))


def redrive(
    subscription: DeadLetterSubscription,
    publisher: pubsub_v1.PublisherClient,
    options: RedriveOptions,
    deadline: float,
    out: TextIO = sys.stdout,
) -> RedriveReport:
    """Republish the selected letters, acknowledging each once its publish is confirmed.

    Letters whose original message this run republished (dead-lettered again meanwhile) are
    left for the next run, so one run is one round and `--max_redrives` counts runs.
    Everything not acknowledged is released at the end, to return at once.
    """
    report = RedriveReport(ended="all read")
    ours: set[str] = set()  # message ids this run published
    pace = _Pace(options.rate)
    per_pull = PULL_MAX if not options.rate else max(1, min(PULL_MAX, int(options.rate)))
    room = options.limit if options.limit is not None else -1
    with LiveProgress("redrive", total=options.limit) as progress:
        for batch in subscription.letters(deadline, per_pull):
            report.read += len(batch)
            sent_before = report.sent
            sending: list[Outgoing] = []
            done: list[str] = []  # to acknowledge
            for letter in batch:
                if letter.original_message_id and letter.original_message_id in ours:
                    report.returned += 1
                    continue
                if not options.selection.redrivable(letter) or room == 0:
                    continue
                report.matched += 1
                try:
                    message = outgoing(letter)
                except CannotRedriveError as exc:
                    report.refused += 1
                    report.note(f"refused: letter {letter.message_id} ({letter.kind}): {exc}")
                    continue
                if message.round > options.max_redrives:
                    report.exhausted += 1
                    fate = "dropped" if options.drop_exhausted else "left in the subscription"
                    report.note(
                        f"exhausted: letter {letter.message_id} ({letter.kind}, original "
                        f"{letter.original_message_id}) was redriven {message.round - 1} times "
                        f"(--max_redrives {options.max_redrives}): {fate}"
                    )
                    if options.drop_exhausted and not options.dry_run:
                        done.append(letter.message_id)
                        report.dropped += 1
                    continue
                room -= 1
                if options.dry_run:
                    print(_would_send(message), file=out)
                    report.sent += 1
                else:
                    sending.append(message)
            sent, failed = publish(publisher, options.topic, sending)
            for message, message_id in sent:
                ours.add(message_id)
                done.append(message.letter.message_id)
            report.sent += len(sent)
            report.failed += len(failed)
            if report.sent > sent_before:
                report.sending_seconds = progress.elapsed()
            if failed:
                first, error = failed[0]
                report.note(
                    f"failed: {len(failed)} letters (the first: letter {first.letter.message_id})"
                    f" stay in the subscription; publish: {error}"
                )
            subscription.acknowledge(done)
            progress.update(report.sent, report.counts())
            if failed:
                report.ended = "stopped: a publish failed"
                break
            if room == 0:
                report.ended = f"stopped at --limit {options.limit}"
                break
            pace.wait(report.sent)
        else:
            if not subscription.complete:
                report.ended = "stopped at --timeout"
        report.seconds = progress.elapsed()
    subscription.release_all()
    return report
