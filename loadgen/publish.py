"""Publish planned messages at a steady rate, recording every outcome in the ledger."""

import itertools
import queue
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from google.api_core.retry import Retry
from google.cloud import pubsub_v1

from loadgen.ledger import Ledger
from loadgen.ratelimit import TokenBucket
from loadgen.report import Progress, PublishStats
from loadgen.traffic import LOADGEN_ID, Planned

MAX_ATTEMPTS = 3  # our retries on top of the client's own, before "not sent"
PUBLISH_RETRY = Retry(initial=0.1, maximum=5.0, multiplier=2.0, timeout=30.0)


@dataclass(frozen=True, slots=True)
class _Outcome:
    seq: int
    attempt: int
    message_id: str | None
    error: str | None
    started: int  # epoch micros: the publish call ...
    confirmed: int  # ... and its confirmation, the window holding the publish time


def _now_micros() -> int:
    return time.time_ns() // 1000


def _limited(
    messages: Iterable[Planned], count: int | None, duration: float | None
) -> Iterator[Planned]:
    deadline = time.monotonic() + duration if duration is not None else None
    for index, planned in enumerate(messages):
        if count is not None and index >= count:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        yield planned


class Publisher:
    """Publishes with a token bucket; failed publishes are retried, then recorded as failed."""

    def __init__(self, topic: str, ledger: Ledger | None, rate: float) -> None:
        """`ledger` None: publish without recording (the benchmark's own traffic)."""
        self._topic = topic
        self._ledger = ledger
        self._bucket = TokenBucket(rate)
        self._results: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=500, max_bytes=4 * 1024 * 1024, max_latency=0.01
            )
        )
        self._outstanding = 0
        self._planned: dict[int, Planned] = {}  # only messages not yet settled
        self.stats = PublishStats()

    def _send(self, seq: int, planned: Planned, attempt: int) -> None:
        attributes = dict(planned.attributes)
        if self._ledger is not None:
            attributes[LOADGEN_ID] = self._ledger.loadgen_id(seq)
        started = _now_micros()
        future = self._client.publish(self._topic, planned.data, retry=PUBLISH_RETRY, **attributes)
        self._outstanding += 1

        def done(f: object) -> None:
            try:
                message_id = f.result()  # type: ignore[attr-defined]
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._results.put(_Outcome(seq, attempt, None, error, started, _now_micros()))
            else:
                self._results.put(_Outcome(seq, attempt, message_id, None, started, _now_micros()))

        future.add_done_callback(done)

    def _settle(self, block: bool = False) -> None:
        sent: list[tuple[int, str, int, int]] = []
        failed: list[tuple[int, str]] = []
        while self._outstanding:
            try:
                outcome = self._results.get(block=block, timeout=60 if block else None)
            except queue.Empty:
                break
            self._outstanding -= 1
            if outcome.message_id is not None:
                sent.append((outcome.seq, outcome.message_id, outcome.started, outcome.confirmed))
                self._planned.pop(outcome.seq, None)
                continue
            self.stats.errors += 1
            if outcome.attempt < MAX_ATTEMPTS:
                self.stats.retries += 1
                self._send(outcome.seq, self._planned[outcome.seq], outcome.attempt + 1)
            else:
                failed.append((outcome.seq, outcome.error or "unknown error"))
                self._planned.pop(outcome.seq, None)
        if (sent or failed) and self._ledger is not None:
            self._ledger.settle(sent, failed)
        self.stats.sent += len(sent)
        self.stats.failed += len(failed)

    def run(
        self,
        messages: Iterable[Planned],
        progress: Progress,
        count: int | None = None,
        duration: float | None = None,
        chunk: int | None = None,
    ) -> PublishStats:
        """Publish until `count` messages or `duration` seconds; wait for every outcome.

        Messages are generated (event time stamped) a chunk at a time: by default 50 ms of
        traffic, so event times trail publish times by at most ~50 ms.
        """
        chunk = chunk or max(1, min(500, int(self._bucket.rate / 20)))
        seq = self._ledger.next_seq() if self._ledger is not None else 0
        previous = -1
        source = _limited(messages, count, duration)
        while batch := list(itertools.islice(source, chunk)):
            numbered: list[tuple[int, Planned]] = []
            for planned in batch:
                if planned.duplicate_of == -1:
                    planned = replace(planned, duplicate_of=previous)
                numbered.append((seq, planned))
                previous, seq = seq, seq + 1
            if self._ledger is not None:
                self._ledger.add(numbered)  # recorded before it can possibly arrive
            for index, (number, planned) in enumerate(numbered):
                self._bucket.acquire()
                self._planned[number] = planned
                self._send(number, planned, 1)
                if index % 100 == 99:
                    self._settle()  # batched: one ledger transaction per ~100 outcomes
                    progress.update(self.stats)
            self._settle()
            progress.update(self.stats)
        while self._outstanding:
            self._settle(block=True)
            progress.update(self.stats)
        self._client.stop()
        return self.stats
