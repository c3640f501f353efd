"""How the pull source paces itself: how long a partial batch waits, and which readers pull.

Pure logic on times the caller passes in. Why: stream/DESIGN.md, "Pacing the pull".
"""

import os
import threading
from dataclasses import dataclass

from apache_beam.utils.timestamp import Timestamp

RATE_SMOOTHING = 0.3  # weight of the newest batch in the smoothed arrival rate
# A batch this large pays its bundle's fixed cost (~40 ms of CPU in Prism and the SDK workers
# with rollups on, measured) at a fraction of what its messages cost: no point waiting for
# more (and its rows' latency grows with the wait and with the batch).
WORTH_A_BUNDLE = 250
MIN_MESSAGES_TO_WAIT_FOR = 1.0  # a wait expected to bring fewer than this is not worth it
HELPERS_STAY_SECONDS = 2.0  # helpers keep pulling this long after the lead's last full batch
# How long a parked helper waits before it checks again: soon while the lead is busy (or has
# not pulled yet), rarely when traffic is light (each check-in is a bundle).
PARK_SHORT_SECONDS = 0.5
PARK_LONG_SECONDS = 5.0


@dataclass
class BatchWait:
    """How long a partial batch waits for more, from the arrival rate its reader has seen.

    Each batch is one bundle, whose fixed cost (in Prism and in every SDK worker) is paid
    per bundle: a batch that waits up to `longest` for more pays it once for more messages.
    A full batch (a backlog) waits for nothing, and neither does a batch when traffic is so
    sparse that the wait would bring nothing but latency.
    """

    longest: float  # seconds (--pull_fill_ms)
    full: int  # messages (--pull_max_messages)
    enough: int = WORTH_A_BUNDLE  # messages worth a bundle: waiting for more gains little
    rate: float | None = None  # messages per second this reader received, smoothed
    _since: float | None = None  # when the previous batch (or empty pull) was complete

    def seen(self, messages: int, now: float) -> None:
        """A batch of `messages` (0: an empty pull) was complete at `now` (seconds)."""
        if self._since is not None and now > self._since:
            sample = messages / (now - self._since)
            self.rate = (
                sample if self.rate is None else self.rate + RATE_SMOOTHING * (sample - self.rate)
            )
        self._since = now

    def wait(self, in_hand: int) -> float:
        """Seconds to wait for more before the batch goes downstream (0: go now)."""
        wanted = min(self.enough, self.full)
        if in_hand >= wanted or self.longest <= 0:
            return 0.0
        if self.rate is None:
            return self.longest
        if self.rate * self.longest < MIN_MESSAGES_TO_WAIT_FOR:
            return 0.0
        return min(self.longest, (wanted - in_hand) / self.rate)


class Readers:
    """What the readers of one subscription in this process share.

    Reader 0 leads: it always pulls. The others help only while the lead's batches come back
    full (a backlog, or more traffic than one reader's batches hold): under light traffic
    they would only split the batches, and the bundles, in two. A parked helper reports the
    lead's watermark.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._full_at: float | None = None
        self._last_batch: int | None = None
        self._watermark: Timestamp | None = None
        self._waits: dict[int, BatchWait] = {}

    def batch_wait(self, reader: int, longest: float, full: int) -> BatchWait:
        """The batch wait of `reader` (one per reader: each sees its own arrival rate)."""
        with self._lock:
            return self._waits.setdefault(reader, BatchWait(longest, full))

    def lead_pulled(self, batch: int, full: bool, watermark: Timestamp | None, now: float) -> None:
        """The lead's latest batch (0: an empty pull), and its watermark after it."""
        with self._lock:
            self._last_batch = batch
            if full:
                self._full_at = now
            if watermark is not None:
                self._watermark = watermark

    def helper_parks(self, now: float, prober: bool = False) -> float:
        """How long a helper parks before it checks again; 0: it pulls now.

        Helpers pull while the lead had a full batch in the last few seconds. A `prober`
        (the first reader of a second ingest process, whose probes are its lead's batches)
        parks long unless it has not probed yet: a probe takes what is at hand, which
        under light traffic is what the other process's lead is waiting to fill its batch.
        """
        with self._lock:
            if self._full_at is not None and now - self._full_at <= HELPERS_STAY_SECONDS:
                return 0.0
            if self._last_batch is None:
                return PARK_SHORT_SECONDS
            busy = self._last_batch >= WORTH_A_BUNDLE and not prober
            return PARK_SHORT_SECONDS if busy else PARK_LONG_SECONDS

    @property
    def watermark(self) -> Timestamp | None:
        """The lead's watermark, as last reported."""
        with self._lock:
            return self._watermark


_registry_lock = threading.Lock()
_readers: dict[tuple[str, str], Readers] = {}


def readers(subscription: str) -> Readers:
    """The process-wide readers of `subscription` (per emulator address, like the clients)."""
    key = (subscription, os.environ.get("PUBSUB_EMULATOR_HOST", ""))
    with _registry_lock:
        return _readers.setdefault(key, Readers())
