"""The ledger: every message published and what must be true afterwards (SQLite on disk).

Rows are streamed in and out in key order, so millions of messages never sit in memory.
"""

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadgen.expect import PUBLISH_TIME
from loadgen.traffic import LOADGEN_ID, UNJUDGED, Planned

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    schema TEXT NOT NULL,
    expect TEXT NOT NULL,              -- row | deadletter
    table_group TEXT NOT NULL,
    row_key TEXT NOT NULL,
    ts INTEGER NOT NULL,               -- cell timestamp, micros (-1: the publish time)
    cells TEXT NOT NULL,               -- JSON {"family:qualifier": value}
    reason TEXT NOT NULL,              -- expected dead-letter kind
    duplicate_of INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    message_id TEXT,
    error TEXT,
    sent_from INTEGER,                 -- the publish call of the attempt that succeeded, and
    sent_until INTEGER                 -- its confirmation (epoch micros): the publish window
);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (table_group, row_key, ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    loadgen_id TEXT,
    kind TEXT,
    message_id TEXT,
    stage TEXT,
    pubsub_id TEXT UNIQUE  -- the dead letter's own message id: a redelivery is not a duplicate
);
-- Messages once expected as dead letters that must now become rows (the cause was fixed and
-- their letters redriven), with the reason they were refused for: their history.
CREATE TABLE IF NOT EXISTS redriven (seq INTEGER PRIMARY KEY, reason TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ExpectedEvent:
    """One sent message that must produce (or be superseded in) a row.

    `ts` PUBLISH_TIME: the cell timestamp is the message's publish time, which only Pub/Sub
    knows exactly; it lies within `window` (the publish call until its confirmation).
    """

    seq: int
    row_key: str
    ts: int
    cells: dict[str, str]
    window: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter as drained from the dead-letter subscription."""

    loadgen_id: str
    kind: str
    message_id: str
    stage: str
    pubsub_id: str | None = None


class Ledger:
    """One load run: planned messages, publish results and the dead letters seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='run_id'").fetchone()
        if row is None:
            self.run_id = uuid.uuid4().hex[:12]
            self._db.execute("INSERT INTO meta VALUES ('run_id', ?)", (self.run_id,))
        else:
            self.run_id = row[0]

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loadgen_id(self, seq: int) -> str:
        """The `loadgen_id` attribute value of message `seq`."""
        return f"{self.run_id}:{seq}"

    def seq_of(self, loadgen_id: str) -> int | None:
        """The sequence number in this run, or None for a foreign or malformed id."""
        run, _, seq = loadgen_id.partition(":")
        # isascii: str.isdigit() also accepts digits int() refuses, such as "²".
        return int(seq) if run == self.run_id and seq.isascii() and seq.isdigit() else None

    def next_seq(self) -> int:
        """The first unused sequence number (a ledger can take several publish runs)."""
        row = self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages").fetchone()
        return int(row[0])

    def add(self, items: Iterable[tuple[int, Planned]]) -> None:
        """Record planned messages (status pending) before they are published."""
        rows = [
            (
                seq,
                p.schema,
                p.expect,
                p.table_group,
                p.row_key,
                p.timestamp_micros,
                json.dumps(p.cells, sort_keys=True),
                p.reason,
                p.duplicate_of,
            )
            for seq, p in items
        ]
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO messages (seq, schema, expect, table_group, row_key, ts, cells, reason,"
            " duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._db.execute("COMMIT")

    def settle(
        self, sent: Iterable[tuple[int, str, int, int]], failed: Iterable[tuple[int, str]]
    ) -> None:
        """Record publish outcomes: (seq, message_id, window from, until) sent, (seq, error)."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "UPDATE messages SET status='sent', message_id=?, sent_from=?, sent_until=?"
            " WHERE seq=?",
            [(mid, start, end, seq) for seq, mid, start, end in sent],
        )
        self._db.executemany(
            "UPDATE messages SET status='failed', error=? WHERE seq=?",
            [(err, seq) for seq, err in failed],
        )
        self._db.execute("COMMIT")

    def counts(self) -> dict[str, int]:
        """Messages by status, and sent messages by expectation."""
        result = {
            status: n
            for status, n in self._db.execute(
                "SELECT status, COUNT(*) FROM messages GROUP BY status"
            )
        }
        for expect, n in self._db.execute(
            "SELECT expect, COUNT(*) FROM messages WHERE status='sent' GROUP BY expect"
        ):
            result[f"sent_{expect}"] = n
        return result

    def table_groups(self) -> list[str]:
        """Table groups that sent messages must have rows in."""
        rows = self._db.execute(
            "SELECT DISTINCT table_group FROM messages WHERE expect='row' AND status='sent'"
        )
        return sorted(group for (group,) in rows)

    def expected_rows(self, table_group: str) -> Iterator[list[ExpectedEvent]]:
        """Sent row events of one table, grouped by row key, in Bigtable's key order."""
        cursor = self._db.execute(
            "SELECT seq, row_key, ts, cells, sent_from, sent_until FROM messages"
            " WHERE expect='row' AND status='sent' AND table_group=? ORDER BY row_key, ts",
            (table_group,),
        )
        group: list[ExpectedEvent] = []
        for seq, key, ts, cells, start, end in cursor:
            if group and group[0].row_key != key:
                yield group
                group = []
            window = (start, end) if ts == PUBLISH_TIME and start is not None else None
            group.append(ExpectedEvent(seq, key, ts, json.loads(cells), window))
        if group:
            yield group

    def unjudged(self) -> set[int]:
        """Seqs of sent messages whose outcome the oracle cannot predict (traffic.UNJUDGED)."""
        rows = self._db.execute(
            "SELECT seq FROM messages WHERE expect=? AND status='sent'", (UNJUDGED,)
        )
        return {seq for (seq,) in rows.fetchall()}

    def expected_letters(self) -> dict[int, str]:
        """Seq -> reason for every sent message that must be dead-lettered."""
        return dict(
            self._db.execute(
                "SELECT seq, reason FROM messages WHERE expect='deadletter' AND status='sent'"
            ).fetchall()
        )

    def expect_rows_for(self, reason: str) -> int:
        """From now on, sent messages refused for `reason` must become their rows.

        For when the cause was fixed (e.g. the catalog now lists the service) and their
        letters redriven: each message whose planned row is known (unknown_service traffic
        keeps it) expects that row instead of its dead letter. The letters drained before
        stay expected history (`redriven`), not unexpected. Returns how many changed.
        """
        self._db.execute("BEGIN")
        self._db.execute(
            "INSERT OR IGNORE INTO redriven (seq, reason) SELECT seq, reason FROM messages"
            " WHERE expect='deadletter' AND status='sent' AND reason=? AND row_key != ''",
            (reason,),
        )
        changed = self._db.execute(
            "UPDATE messages SET expect='row'"
            " WHERE expect='deadletter' AND status='sent' AND reason=? AND row_key != ''",
            (reason,),
        ).rowcount
        self._db.execute("COMMIT")
        return int(changed)

    def redriven(self) -> dict[int, str]:
        """Seq -> the dead-letter kind it had, for messages that now expect their rows."""
        return dict(self._db.execute("SELECT seq, reason FROM redriven").fetchall())

    def row_seqs(self) -> set[int]:
        """Sequence numbers of sent messages that must become rows."""
        rows = self._db.execute("SELECT seq FROM messages WHERE expect='row' AND status='sent'")
        return {seq for (seq,) in rows}

    def add_dead_letters(self, letters: Iterable[StoredLetter]) -> None:
        """Keep drained dead letters, so verify can run again without losing them."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR IGNORE INTO dead_letters (loadgen_id, kind, message_id, stage, pubsub_id)"
            " VALUES (?, ?, ?, ?, ?)",
            [(x.loadgen_id, x.kind, x.message_id, x.stage, x.pubsub_id) for x in letters],
        )
        self._db.execute("COMMIT")

    def dead_letters(self) -> list[StoredLetter]:
        """Every dead letter drained so far."""
        rows = self._db.execute(
            "SELECT loadgen_id, kind, message_id, stage, pubsub_id FROM dead_letters"
        )
        return [StoredLetter(*row) for row in rows]


__all__ = ["LOADGEN_ID", "ExpectedEvent", "Ledger", "StoredLetter"]
