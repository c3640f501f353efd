"""Reading a dead-letter subscription without losing a letter: leases held until settled.

Every letter pulled stays leased (its ack deadline extended) until the command acknowledges
it (done with it: exported with --ack, or republished and confirmed) or releases it at the
end (ack deadline 0: it is redelivered at once, to anyone). Holding leases until the end,
rather than releasing each batch at once, is what lets a scan see every letter: a released
letter comes straight back to the next pull (the emulator redelivers it immediately) and
the scan would go round the same letters. A killed command's letters come back after at
most LEASE_SECONDS.
"""

import sys
import time
from collections.abc import Callable, Iterable, Iterator

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from stream.deadletters.letters import Letter, from_received
from stream.pipeline.io.pubsub_calls import ack_id_chunks

PULL_MAX = 1000  # per pull; the emulator returns at most 100
# The emulator answers an empty pull about 1 s before the client's deadline, so an empty pull
# costs ~2 s. A client deadline shorter than that risks cancelling a pull the server has
# already answered, which leaves its messages leased to nobody until their deadline.
PULL_TIMEOUT_SECONDS = 3.0
EMPTY_PULLS_AT_END = 2  # Pub/Sub may answer one pull empty while messages are pending
LEASE_SECONDS = 30
# A pull that times out, or a blip of the connection, is an empty pull; anything else (no
# such subscription, no permission) is raised, never read as "no letters".
EMPTY_PULL = (gexc.DeadlineExceeded, gexc.ServiceUnavailable)


class DeadLetterSubscription:
    """Synchronous pulls from one subscription, with every pulled letter's lease kept.

    A letter redelivered while we hold it (its lease ran out) is not handed out twice: only
    its newer ack id is kept, since an older one no longer acknowledges it (measured on the
    emulator). A letter acknowledged in this run and delivered again is acknowledged again.
    """

    def __init__(
        self,
        subscriber: pubsub_v1.SubscriberClient,
        path: str,
        lease_seconds: int = LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._subscriber = subscriber
        self._lease = lease_seconds
        self._clock = clock
        self._held: dict[str, str] = {}  # message id -> its latest ack id
        self._settled: set[str] = set()  # message ids acknowledged in this run
        self._extended = clock()
        self.complete = False  # the last scan ended on empty pulls, not on its deadline

    @property
    def held(self) -> int:
        """Letters leased by this run, neither acknowledged nor released."""
        return len(self._held)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        for chunk in ack_id_chunks(ack_ids):
            self._subscriber.modify_ack_deadline(
                request={
                    "subscription": self.path,
                    "ack_ids": list(chunk),
                    "ack_deadline_seconds": seconds,
                }
            )

    def _acknowledge(self, ack_ids: list[str]) -> None:
        for chunk in ack_id_chunks(ack_ids):
            self._subscriber.acknowledge(
                request={"subscription": self.path, "ack_ids": list(chunk)}
            )

    def pull(self, max_messages: int = PULL_MAX) -> list[Letter]:
        """One pull: the letters not seen before in this run (maybe none), now leased."""
        try:
            response = self._subscriber.pull(
                request={"subscription": self.path, "max_messages": max_messages},
                timeout=PULL_TIMEOUT_SECONDS,
            )
        except EMPTY_PULL:
            return []
        fresh: list[Letter] = []
        again: list[str] = []
        for received in response.received_messages:
            letter = from_received(received)
            if letter.message_id in self._settled:
                again.append(letter.ack_id)
            elif letter.message_id in self._held:
                self._held[letter.message_id] = letter.ack_id
            else:
                self._held[letter.message_id] = letter.ack_id
                fresh.append(letter)
        if again:
            self._acknowledge(again)
        if fresh:
            # Our own lease, shorter than a typical dead-letter subscription's deadline: a
            # killed run's letters come back sooner.
            self._modify([letter.ack_id for letter in fresh], self._lease)
        return fresh

    def letters(self, deadline: float, max_messages: int = PULL_MAX) -> Iterator[list[Letter]]:
        """Batches of new letters until two pulls bring nothing new, or `deadline` passes.

        `complete` tells which (a consumer that stops early leaves it False). The last pull
        may end up to PULL_TIMEOUT_SECONDS after the deadline.
        """
        self.complete = False
        empty = 0
        while self._clock() < deadline:
            batch = self.pull(max_messages)
            self.keep_alive()
            if not batch:
                empty += 1
                if empty >= EMPTY_PULLS_AT_END:
                    self.complete = True
                    return
                continue
            empty = 0
            yield batch

    def keep_alive(self) -> None:
        """Extend every held lease once a third of it has passed."""
        now = self._clock()
        if now - self._extended >= self._lease / 3:
            self._extended = now
            self._modify(list(self._held.values()), self._lease)

    def acknowledge(self, message_ids: Iterable[str]) -> None:
        """Done with these letters: they leave the subscription."""
        done = list(message_ids)
        ack_ids = [self._held.pop(mid) for mid in done if mid in self._held]
        self._acknowledge(ack_ids)
        self._settled.update(done)

    def release_all(self) -> None:
        """Give every held letter back at once (ack deadline 0), instead of after its lease.

        A failure here loses nothing (the leases run out within LEASE_SECONDS), so it is
        reported and not raised: it must not hide the error that ended the command.
        """
        ack_ids, self._held = list(self._held.values()), {}
        try:
            self._modify(ack_ids, 0)
        except gexc.GoogleAPICallError as exc:
            print(
                f"warning: could not release {len(ack_ids)} letters ({exc}); they return "
                f"to the subscription when their lease ends, within {self._lease} s",
                file=sys.stderr,
            )
