"""Compare the ledger with Bigtable and the dead-letter topic: lost, duplicated, unexpected.

Rows: for each row key, the newest event (by event time) must be stored with exactly its
cells at its timestamp; older events for the key may have been superseded (GC keeps one
version). A cell version whose timestamp no event for that key has is a duplicate (e.g. a
retry that stamped wall-clock time); a row or column nobody sent is unexpected.
Dead letters: each expected once with its reason; twice is a duplicate; unknown ones are
unexpected.
"""

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from google.cloud.bigtable.data import BigtableDataClient

from loadgen.expect import EPOCH, rfc3339_millis
from loadgen.ledger import ExpectedEvent, Ledger, StoredLetter
from loadgen.readback import Letter, StoredRow, pull_letters, scan
from loadgen.traffic import ANY_KIND, LOADGEN_ID
from stream.pipeline.io.batch_writer import INGESTED_AT

IGNORED_COLUMNS = {INGESTED_AT.decode()}  # written only when --record_ingest_time is set


@dataclass
class Verdict:
    """Counts by class, plus a few examples of each problem for the report."""

    sent: int = 0
    rows: int = 0
    deadletter: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    redelivered: int = 0  # dead letters of a redelivered original: at-least-once, not wrong
    too_late: int = 0  # rows stored but too late for their window's rollup (notices)
    history: int = 0  # dead letters of messages since redriven into their rows (expected)
    unjudged: int = 0  # dead letters of messages the ledger could not predict (a plugin's file)
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep the first few problem descriptions."""
        if len(self.examples) < 20:
            self.examples.append(text)

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or unexpected."""
        return self.lost == self.duplicated == self.unexpected == 0

    def line(self) -> str:
        """The contract's last line."""
        return (
            f"verify: sent={self.sent} rows={self.rows} deadletter={self.deadletter} "
            f"lost={self.lost} duplicated={self.duplicated} unexpected={self.unexpected}"
        )


@dataclass(frozen=True, slots=True)
class Targets:
    """Where the pipeline writes (the same names as its flags)."""

    project: str
    instance: str
    tables: dict[str, str]  # table group -> table id
    dead_letter_subscription: str


# Pub/Sub stamps a message on arrival, between our publish call and its confirmation; this
# much on either side covers clock granularity (ms) and, on real Pub/Sub, the server's clock.
PUBLISH_WINDOW_SLACK_MICROS = 1_000_000
PUBLISH_STAMPED = "cf1:message_timestamp"  # the cell that holds the publish time then


def _rfc3339(micros: int) -> str:
    return rfc3339_millis(EPOCH + timedelta(microseconds=micros))


def _matches(event: ExpectedEvent, stored: StoredRow) -> int | None:
    """The timestamp at which the row holds every cell of the event, or None.

    An event stamped with its publish time matches a version inside its publish window
    whose `message_timestamp` cell is that version's own timestamp.
    """
    if event.window is None:
        ok = all(stored.get(col, {}).get(event.ts) == val for col, val in event.cells.items())
        return event.ts if ok else None
    start = event.window[0] - PUBLISH_WINDOW_SLACK_MICROS
    end = event.window[1] + PUBLISH_WINDOW_SLACK_MICROS
    candidates = set().union(*(stored.get(col, {}) for col in event.cells)) if event.cells else ()
    for ts in sorted(candidates):
        cells = {**event.cells, PUBLISH_STAMPED: _rfc3339(ts)}
        if start <= ts <= end and all(stored.get(c, {}).get(ts) == v for c, v in cells.items()):
            return ts
    return None


def judge_row(events: list[ExpectedEvent], stored: StoredRow | None, verdict: Verdict) -> None:
    """Classify one row key: its ledger events against what Bigtable holds."""
    key = events[0].row_key
    if stored is None:
        verdict.lost += len(events)
        verdict.note(f"lost: row {key} missing ({len(events)} messages)")
        return
    found = {e.seq: _matches(e, stored) for e in events}
    # When each event happened: its timestamp; for a publish-stamped one, where it matched
    # (or, unmatched, the start of its publish window).
    when: dict[int, int] = {}
    for e in events:
        matched = found[e.seq]
        when[e.seq] = e.ts if e.window is None else matched if matched is not None else e.window[0]
    newest_ok = max((when[e.seq] for e in events if found[e.seq] is not None), default=-1)
    for event in events:
        # A stored newer event supersedes this one (one version kept): not lost.
        if found[event.seq] is None and when[event.seq] >= newest_ok:
            verdict.lost += 1
            verdict.note(
                f"lost: row {key} lacks the cells of message {event.seq} @ {when[event.seq]}"
            )
    known_ts = set(when.values())
    known_columns = {col for e in events for col in e.cells}
    known_columns |= {PUBLISH_STAMPED for e in events if e.window is not None}
    for column, versions in stored.items():
        if column.split(":", 1)[1] in IGNORED_COLUMNS:
            continue
        if column not in known_columns:
            verdict.unexpected += 1
            verdict.note(f"unexpected: column {column} in row {key}")
            continue
        extra = [ts for ts in versions if ts not in known_ts]
        if extra:
            verdict.duplicated += len(extra)
            verdict.note(f"duplicated: row {key} {column} has versions {extra} nobody sent")


def judge_table(
    expected: Iterator[list[ExpectedEvent]],
    stored: Iterator[tuple[str, StoredRow]],
    verdict: Verdict,
) -> None:
    """Merge-join the ledger's key-ordered events with the table's key-ordered rows.

    Both sides are sorted by the key's UTF-8 bytes (SQLite BINARY collation, Bigtable's
    order; Python compares str by code point, the same order), so memory stays flat.
    """
    events = next(expected, None)
    row = next(stored, None)
    while events is not None or row is not None:
        if events is not None and (row is None or events[0].row_key < row[0]):
            judge_row(events, None, verdict)
            events = next(expected, None)
            continue
        if row is None:
            break
        verdict.rows += 1
        if events is None or row[0] < events[0].row_key:
            verdict.unexpected += 1
            verdict.note(f"unexpected: row {row[0]} nobody sent")
        else:
            judge_row(events, row[1], verdict)
            events = next(expected, None)
        row = next(stored, None)


def judge_letters(ledger: Ledger, verdict: Verdict) -> None:
    """Expected dead letters once each, with the expected reason.

    Dead letters are delivered at least once, like any Pub/Sub message: when the pipeline
    dies after publishing a dead letter but before acknowledging the original, the original
    is redelivered and dead-lettered again. Both copies name the same original delivery
    (`deadletter_message_id`), which is how consumers deduplicate them, and so does this:
    they count once (reported as redelivered). Dead letters of *different* deliveries of
    one ledger message (e.g. a publish retried by the load generator) are duplicates.
    A message that now expects its row (`Ledger.expect_rows_for`) may also have dead letters
    of the kind it was refused for before: history, counted apart.
    """
    expected = ledger.expected_letters()
    unjudged = ledger.unjudged()
    rows = ledger.row_seqs()
    history = ledger.redriven()
    letters = ledger.dead_letters()
    verdict.deadletter = len(letters)
    seen: Counter[int] = Counter()
    originals: set[tuple[int, str]] = set()
    for letter in letters:
        seq = ledger.seq_of(letter.loadgen_id)
        if seq is not None and seq in unjudged:
            verdict.unjudged += 1
        elif seq is None or (seq not in expected and seq not in rows):
            verdict.unexpected += 1
            verdict.note(f"unexpected: dead letter {letter.loadgen_id or letter.message_id}")
        elif seq in rows and letter.kind == "too_late":
            verdict.too_late += 1  # its row is stored; the notice says the rollup excludes it
        elif seq in rows and history.get(seq) == letter.kind:
            verdict.history += 1  # refused before its cause was fixed, then redriven
        elif seq in rows:
            verdict.unexpected += 1
            verdict.note(f"unexpected: message {seq} dead-lettered ({letter.kind}), not stored")
        elif expected[seq] != ANY_KIND and letter.kind != expected[seq]:
            verdict.unexpected += 1
            verdict.note(
                f"unexpected: message {seq} dead-lettered as {letter.kind}, "
                f"expected {expected[seq]}"
            )
        elif letter.message_id and (seq, letter.message_id) in originals:
            verdict.redelivered += 1
        else:
            originals.add((seq, letter.message_id))
            seen[seq] += 1
    for seq in expected:
        if seen[seq] == 0:
            verdict.lost += 1
            verdict.note(f"lost: dead letter for message {seq} ({expected[seq]}) missing")
        elif seen[seq] > 1:
            verdict.duplicated += seen[seq] - 1
            verdict.note(f"duplicated: message {seq} dead-lettered {seen[seq]} times")


def drain_dead_letters(subscription: str, ledger: Ledger, quiet_seconds: float = 2.0) -> int:
    """Pull and ack everything on the dead-letter subscription into the ledger.

    Letters are stored before they are acked and keyed by their own message id, so a
    redelivery after a failed ack is not mistaken for a duplicate.
    """

    def keep(batch: list[Letter]) -> None:
        ledger.add_dead_letters(
            StoredLetter(
                loadgen_id=letter.attributes.get(LOADGEN_ID, ""),
                kind=letter.attributes.get("deadletter_kind", ""),
                message_id=letter.attributes.get("deadletter_message_id", ""),
                stage=letter.attributes.get("deadletter_stage", ""),
                pubsub_id=letter.message_id,
            )
            for letter in batch
        )

    return len(pull_letters(subscription, timeout=3600, quiet=quiet_seconds, keep=keep))


def verify_once(ledger: Ledger, targets: Targets, client: BigtableDataClient) -> Verdict:
    """One full comparison (drains new dead letters first)."""
    drain_dead_letters(targets.dead_letter_subscription, ledger)
    verdict = Verdict(sent=ledger.counts().get("sent", 0))
    for group in sorted(set(ledger.table_groups()) | set(targets.tables)):
        if group not in targets.tables:
            raise ValueError(f"the ledger expects rows in table group {group!r}: name its table")
        expected = ledger.expected_rows(group)
        judge_table(expected, scan(client, targets.instance, targets.tables[group]), verdict)
    judge_letters(ledger, verdict)
    return verdict


def verify(
    ledger: Ledger, targets: Targets, timeout: float = 120.0, progress: bool = True
) -> Verdict:
    """Wait (bounded) until nothing is lost, then report; the last verdict if time runs out."""
    deadline = time.monotonic() + timeout
    pause = 1.0
    with BigtableDataClient(project=targets.project) as client:
        while True:
            verdict = verify_once(ledger, targets, client)
            if verdict.lost == 0 or time.monotonic() >= deadline:
                break
            if progress:
                print(f"verify: waiting for the pipeline ({verdict.line()})", flush=True)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 10.0)
        # One more drain after a quiet pause: late duplicates of dead letters show up here.
        time.sleep(1.0)
        if drain_dead_letters(targets.dead_letter_subscription, ledger):
            verdict = verify_once(ledger, targets, client)
    return verdict
