"""`export`: every selected letter as one JSON line, for inspection or archiving.

With `ack`, letters are acknowledged only once the lines holding them are flushed and
fsynced: a crash before that leaves them in the subscription (and perhaps also in the file:
at least once, deduplicate by `message_id`), never in neither place.
"""

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from schemas.base import format_rfc3339_millis
from stream.deadletters.letters import Letter
from stream.deadletters.progress import LiveProgress
from stream.deadletters.selection import Selection
from stream.deadletters.subscription import DeadLetterSubscription

SYNC_EVERY = 1000  # letters written between two fsyncs (and acknowledgements) with --ack


def line(letter: Letter) -> dict[str, Any]:
    """One letter as exported: the letter as stored (data, attributes) and its reason."""
    return {
        "message_id": letter.message_id,
        "publish_time": format_rfc3339_millis(letter.publish_time),
        "kind": letter.kind,
        "error": letter.error,
        "stage": letter.stage,
        "schema": letter.schema,
        "original_message_id": letter.original_message_id,
        "original_publish_time": letter.original_publish_time,
        "redrive_count": letter.redrives(),
        "attributes": letter.attributes,
        "data_base64": base64.b64encode(letter.data).decode(),
    }


@dataclass
class ExportResult:
    """What an export did."""

    written: int = 0
    acknowledged: int = 0
    complete: bool = False
    seconds: float = 0.0

    def line(self, path: Path, ack: bool) -> str:
        """The closing summary line."""
        end = "all read" if self.complete else "stopped at --timeout"
        acked = f"acknowledged={self.acknowledged}" if ack else "acknowledged=0 (no --ack)"
        return f"export: written={self.written} {acked} to {path} in {self.seconds:.1f}s ({end})"


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _sync_directory(path: Path) -> None:
    """Make the new file's directory entry durable too (a fsynced file can vanish without)."""
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def export(
    subscription: DeadLetterSubscription,
    selection: Selection,
    path: Path,
    deadline: float,
    ack: bool = False,
) -> ExportResult:
    """Write the selected letters to a new file `path`; acknowledge them if `ack`.

    Letters not selected, and without `ack` every letter, are released at the end.
    """
    result = ExportResult()
    pending: list[str] = []  # written, not yet synced (and acknowledged)

    with path.open("xb") as out, LiveProgress("export") as progress:
        _sync_directory(path)

        def settle() -> None:
            _sync(out)
            if ack and pending:
                subscription.acknowledge(pending)
                result.acknowledged += len(pending)
            pending.clear()

        for batch in subscription.letters(deadline):
            for letter in batch:
                if not selection.matches(letter):
                    continue
                out.write(json.dumps(line(letter), sort_keys=True).encode() + b"\n")
                result.written += 1
                pending.append(letter.message_id)
            if len(pending) >= SYNC_EVERY:
                settle()
            progress.update(
                result.written, {"written": result.written, "acknowledged": result.acknowledged}
            )
        settle()
        result.complete = subscription.complete
        result.seconds = progress.elapsed()
    subscription.release_all()
    return result
