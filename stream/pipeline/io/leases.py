"""Leases of the messages the pull source holds: extended while worked on, given back on failure.

Why a keeper of our own (the synchronous Pull API has none) and its timings: stream/DESIGN.md,
"Backoff in place and leases".
"""

import atexit
import itertools
import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from google.cloud import pubsub_v1

from stream.pipeline.io import clients
from stream.pipeline.io.pubsub_calls import (
    PUBSUB_CALL_ERRORS,
    REFUSED_PUBSUB_ERRORS,
    SUBSCRIBER_ROLE,
    ack_id_chunks,
    pubsub_retry,
    refused_by_pubsub,
)
from stream.pipeline.refused import RefusedError

# Pub/Sub's shortest ack deadline: whatever the subscription says, a pulled message is
# leased at least this long. The first extension comes well before it.
MIN_ACK_DEADLINE_SECONDS = 10.0
FIRST_EXTENSION_AFTER_SECONDS = 3.0
EXTEND_BY_SECONDS = 60  # what each extension asks for (Pub/Sub allows 0 to 600)
RENEW_BEFORE_SECONDS = 20.0  # extend again when less than this is left
TICK_SECONDS = 1.0
RELEASE_TIMEOUT_SECONDS = 10.0
PULLS_GRACE_SECONDS = 2.0  # how long a job's end waits for pulls in flight (release_all)
_LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class _Lease:
    message_id: str
    owner: int
    renew_at: float  # monotonic seconds
    limit: float  # pulled + max lease: never extended past this


@dataclass(frozen=True)
class Renewal:
    """What is due: ack ids to extend, by the seconds to ask for; leases given up."""

    extend: dict[int, list[str]] = field(default_factory=dict)
    given_up: tuple[str, ...] = ()


class Leases:
    """Which messages this process holds and when each lease needs extending (no I/O).

    Times are monotonic seconds passed in by the caller. A message pulled again while its
    earlier delivery is still held (same message id) counts as a redelivery: its lease ran
    out; the new ack id replaces the old one.
    """

    def __init__(self) -> None:
        self._leases: dict[str, _Lease] = {}
        self._ack_id_of: dict[str, str] = {}  # message id -> its current ack id
        self.peak = 0

    def __len__(self) -> int:
        return len(self._leases)

    def hold(
        self, owner: int, messages: Iterable[tuple[str, str]], now: float, max_lease: float
    ) -> int:
        """Register (ack id, message id) pairs just pulled; returns how many were redelivered."""
        redelivered = 0
        for ack_id, message_id in messages:
            previous = self._ack_id_of.get(message_id)
            if previous is not None:
                redelivered += 1
                self._leases.pop(previous, None)
            self._ack_id_of[message_id] = ack_id
            renew_at = now + FIRST_EXTENSION_AFTER_SECONDS
            self._leases[ack_id] = _Lease(message_id, owner, renew_at, now + max_lease)
        self.peak = max(self.peak, len(self._leases))
        return redelivered

    def done(self, ack_ids: Iterable[str]) -> None:
        """Forget messages that were acknowledged (or given back)."""
        for ack_id in ack_ids:
            lease = self._leases.pop(ack_id, None)
            if lease is not None and self._ack_id_of.get(lease.message_id) == ack_id:
                del self._ack_id_of[lease.message_id]

    def due(self, now: float) -> Renewal:
        """Leases to extend now; those past their maximum are given up (and forgotten)."""
        extend: dict[int, list[str]] = defaultdict(list)
        given_up: list[str] = []
        for ack_id, lease in self._leases.items():
            if now < lease.renew_at:
                continue
            left = lease.limit - now
            if left <= 0:
                given_up.append(ack_id)
            else:
                extend[min(EXTEND_BY_SECONDS, math.ceil(left))].append(ack_id)
        self.done(given_up)
        return Renewal(dict(extend), tuple(given_up))

    def extended(self, ack_ids: Iterable[str], seconds: int, now: float) -> None:
        """Record an extension Pub/Sub accepted (`now`: when it was asked for)."""
        for ack_id in ack_ids:
            lease = self._leases.get(ack_id)
            if lease is None:
                continue  # acknowledged meanwhile
            if seconds >= EXTEND_BY_SECONDS:
                lease.renew_at = now + seconds - RENEW_BEFORE_SECONDS
            else:
                lease.renew_at = lease.limit  # the last extension: given up when it ends

    def take(self, owner: int | None = None, ack_ids: Iterable[str] | None = None) -> list[str]:
        """Remove and return the leases of `owner`, or the `ack_ids` given, or all of them."""
        if ack_ids is not None:
            chosen = [a for a in ack_ids if a in self._leases]
        else:
            chosen = [a for a, lease in self._leases.items() if owner in (None, lease.owner)]
        self.done(chosen)
        return chosen


class LeaseKeeper:
    """This process's leases on one subscription; a daemon thread extends them in time."""

    def __init__(
        self,
        subscription: str,
        subscriber: pubsub_v1.SubscriberClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: monotonic seconds, when leases are due (tests pass a fake)."""
        self.subscription = subscription
        self._subscriber = subscriber
        self._clock = clock
        self._lock = threading.Lock()
        # One release at a time: the launcher's release at job end waits for a torn-down
        # reader's release in flight on another thread, which process exit would cut short.
        self._releasing = threading.Lock()
        self._leases = Leases()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.extended = 0  # extensions Pub/Sub accepted (one per message and extension)
        self.released = 0
        self.given_up = 0
        self._refusal: RefusedError | None = None  # an extension Pub/Sub refused for good
        # Closed when the job ended: a pull still in flight then (it may even receive what was
        # just given back) gives its messages back at once instead of holding them.
        self._closed = False
        self._pulls = 0  # pulls in flight on this subscription (the pull source's readers)
        self._idle = threading.Condition(self._lock)

    @property
    def held(self) -> int:
        """Messages held right now."""
        with self._lock:
            return len(self._leases)

    @property
    def peak(self) -> int:
        """The most messages this process held at once."""
        with self._lock:
            return self._leases.peak

    def hold(self, owner: int, messages: Iterable[tuple[str, str]], max_lease: float) -> int | None:
        """Keep these (ack id, message id) leases; returns how many were redelivered.

        None: the keeper is closed (the job ended); the messages were given back instead.
        """
        with self._lock:
            closed = self._closed
        if closed:
            pairs = list(messages)
            for chunk in ack_id_chunks([ack_id for ack_id, _ in pairs]):
                self._give_back(chunk)
            return None
        with self._lock:
            redelivered = self._leases.hold(owner, messages, self._clock(), max_lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"lease-keeper {self.subscription}", daemon=True
                )
                self._thread.start()
        return redelivered

    def done(self, ack_ids: Iterable[str]) -> None:
        """These messages were acknowledged: stop extending them."""
        with self._lock:
            self._leases.done(ack_ids)

    def release(
        self,
        owner: int | None = None,
        ack_ids: Iterable[str] | None = None,
        note: str | None = None,
    ) -> int:
        """Give messages back at once (ack deadline 0): `owner`'s, the `ack_ids`, or all.

        Best effort: if Pub/Sub cannot be reached, they come back when their last
        extension runs out (at most EXTEND_BY_SECONDS). `note`: logged with the count
        ("released N messages <note>") before the next release may start.
        """
        with self._releasing:
            with self._lock:
                chosen = self._leases.take(owner, ack_ids)
            released = sum(self._give_back(chunk) for chunk in ack_id_chunks(chosen))
            self.released += released
            if released and note:
                _LOG.info("released %d messages %s", released, note)
        return released

    @contextmanager
    def pulling(self) -> Iterator[None]:
        """Around a pull and the hold of its batch: `wait_for_pulls` knows one is in flight."""
        with self._lock:
            self._pulls += 1
        try:
            yield
        finally:
            with self._lock:
                self._pulls -= 1
                self._idle.notify_all()

    def wait_for_pulls(self, deadline: float) -> bool:
        """Wait (until `deadline`, monotonic) for the pulls in flight to return; True if none."""
        with self._lock:
            while self._pulls:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def close(self) -> None:
        """The job ended: from now on a pull's messages are given back, not held."""
        with self._lock:
            self._closed = True

    def reopen(self) -> None:
        """A new job starts: hold what it pulls again."""
        with self._lock:
            self._closed = False
        self._pulls = 0  # pulls in flight on this subscription (the pull source's readers)
        self._idle = threading.Condition(self._lock)

    def _give_back(self, ack_ids: Sequence[str]) -> int:
        """Ack deadline 0 for these; returns how many (0 if Pub/Sub could not be reached)."""
        try:
            self._modify(ack_ids, 0, RELEASE_TIMEOUT_SECONDS)
        except PUBSUB_CALL_ERRORS as exc:
            _LOG.warning(
                "leases: could not release %d messages (%s); they are redelivered when "
                "their lease runs out",
                len(ack_ids),
                exc,
            )
            return 0
        return len(ack_ids)

    def renew(self) -> int:
        """One round of the keeper: extend every lease that is due; returns how many."""
        now = self._clock()
        with self._lock:
            renewal = self._leases.due(now)
            held = len(self._leases)
        if renewal.given_up:
            self.given_up += len(renewal.given_up)
            _LOG.warning(
                "leases: %d messages held longer than --max_lease_seconds are no longer "
                "extended; Pub/Sub redelivers them when their lease runs out",
                len(renewal.given_up),
            )
        extended = 0
        for seconds, ack_ids in renewal.extend.items():
            for chunk in ack_id_chunks(ack_ids):
                try:
                    self._modify(chunk, seconds, float(RENEW_BEFORE_SECONDS) / 2)
                except REFUSED_PUBSUB_ERRORS as exc:
                    self._refused(exc, chunk)
                    continue
                except PUBSUB_CALL_ERRORS as exc:
                    _LOG.warning("leases: extending %d failed, tried again: %s", len(chunk), exc)
                    continue  # still due: the next round tries again
                with self._lock:
                    self._leases.extended(chunk, seconds, now)
                extended += len(chunk)
        if extended:
            self.extended += extended
            _LOG.info(
                "leases: extended %d messages of %s by up to %ds (held: %d, peak: %d)",
                extended,
                self.subscription,
                max(renewal.extend),
                held,
                self.peak,
            )
        return extended

    def raise_refusal(self) -> None:
        """Raise the RefusedError of an extension Pub/Sub refused for good, if one was."""
        with self._lock:
            refusal = self._refusal
        if refusal is not None:
            raise RefusedError(refusal.what, refusal.fix)

    def _refused(self, exc: Exception, ack_ids: Sequence[str]) -> None:
        """No extension can succeed: stop trying these; the pull stops the job."""
        refusal = refused_by_pubsub(exc, "extend leases on", self.subscription, SUBSCRIBER_ROLE)
        with self._lock:
            self._leases.take(ack_ids=ack_ids)
            first = self._refusal is None
            self._refusal = self._refusal or refusal
        if first:
            _LOG.error("leases: %s", refusal)

    def stop(self) -> None:
        """Stop the keeper's thread (tests; the process-wide keepers live until exit)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            try:
                self.renew()
            except Exception:  # the keeper must outlive any one round; logged with its cause
                _LOG.exception("leases: a renewal round failed; trying again")

    def _modify(self, ack_ids: Sequence[str], seconds: int, timeout: float) -> None:
        if self._subscriber is None:
            self._subscriber = clients.subscriber()
        self._subscriber.modify_ack_deadline(
            request={
                "subscription": self.subscription,
                "ack_ids": list(ack_ids),
                "ack_deadline_seconds": seconds,
            },
            retry=pubsub_retry(timeout),
            timeout=timeout,
        )


_registry_lock = threading.Lock()
_keepers: dict[tuple[str, str], LeaseKeeper] = {}
_owners = itertools.count(1)


def keeper(subscription: str) -> LeaseKeeper:
    """The process-wide keeper of `subscription` (per emulator address, like the clients)."""
    key = (subscription, os.environ.get("PUBSUB_EMULATOR_HOST", ""))
    with _registry_lock:
        if not _keepers:
            atexit.register(release_all)
        if key not in _keepers:
            _keepers[key] = LeaseKeeper(subscription, clients.subscriber())
        return _keepers[key]


def new_owner() -> int:
    """A token for one holder of leases (a pull DoFn instance), to release only its own."""
    with _registry_lock:
        return next(_owners)


def release_all(grace: float = PULLS_GRACE_SECONDS) -> int:
    """The job ended: give back what every keeper of this process holds, and close them.

    Pub/Sub hands a message given back to any pull in flight, such as a long poll of this
    very process: closed keepers give back what such a pull receives (`hold`), and this waits
    up to `grace` seconds for those pulls to return (one that captured messages returns at
    once; one still waiting has nothing). `reopen_all` before the next job. Returns how many
    messages were given back now.
    """
    with _registry_lock:
        keepers = list(_keepers.values())
    for k in keepers:
        k.close()
    released = sum(k.release() for k in keepers)
    deadline = time.monotonic() + grace
    for k in keepers:
        k.wait_for_pulls(deadline)
    return released


def reopen_all() -> None:
    """A new job starts in this process: its keepers hold what it pulls again."""
    with _registry_lock:
        keepers = list(_keepers.values())
    for k in keepers:
        k.reopen()
