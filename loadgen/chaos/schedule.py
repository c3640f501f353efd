"""A seeded schedule of faults and kills: slots of the soak, each one action or calm.

Pure: the same seed and length give the same schedule, printed before the soak starts, so
a failing soak can be run again exactly (`python -m loadgen chaos --seed S`).
"""

import random
from dataclasses import dataclass

SLOT_SECONDS = 20.0
# action -> (what it hits, weight). Faults last their slot; kills happen at its start and
# the rest of the slot is the restart.
ACTIONS: dict[str, tuple[str, float]] = {
    "bigtable_outage": ("bigtable", 1.0),
    "bigtable_overload": ("bigtable", 1.0),  # entries RESOURCE_EXHAUSTED
    "bigtable_errors": ("bigtable", 1.0),  # calls and entries failing with transient codes
    "bigtable_slow": ("bigtable", 0.5),
    "pubsub_outage": ("pubsub", 1.0),
    "pubsub_errors": ("pubsub", 1.0),  # every method failing with transient codes
    "pubsub_lost_answers": ("pubsub", 1.0),
    "pubsub_duplicates": ("pubsub", 0.5),  # pulls deliver earlier messages again, slowly
    "kill_launcher": ("process", 1.0),
    "kill_rollup_worker": ("process", 1.0),
    "kill_prism": ("process", 1.0),
}
TARGETS = ("bigtable", "pubsub", "process")
KILLS = frozenset(name for name, (target, _) in ACTIONS.items() if target == "process")


@dataclass(frozen=True)
class Action:
    """One slot: starts `at` seconds into the soak, lasts `seconds`; `name` in ACTIONS."""

    at: float
    seconds: float
    name: str
    seed: int  # of the action's own ratio rules

    @property
    def target(self) -> str:
        """bigtable, pubsub or process."""
        return ACTIONS[self.name][0]

    def line(self) -> str:
        """`  40s-60s  pubsub_errors` for the printed schedule."""
        return f"{self.at:5.0f}s-{self.at + self.seconds:.0f}s  {self.name}"


def schedule(minutes: float, seed: int, slot: float = SLOT_SECONDS) -> list[Action]:
    """The soak's actions: the first and last slots calm, every other slot one action.

    Every kind of target appears at least once when there are three slots or more to fill
    (a short soak still meets both proxies and a kill); the rest are drawn by weight.
    """
    rng = random.Random(seed)
    slots = int(minutes * 60 // slot)
    inner = list(range(1, max(1, slots - 1)))
    names = list(ACTIONS)
    weights = [weight for _, weight in ACTIONS.values()]
    chosen = [rng.choices(names, weights)[0] for _ in inner]
    if len(inner) >= 3:  # three distinct slots, one per target
        for index, target in zip(rng.sample(range(len(inner)), 3), TARGETS, strict=True):
            chosen[index] = rng.choice([n for n in names if ACTIONS[n][0] == target])
    return [
        Action(at=index * slot, seconds=slot, name=name, seed=rng.randrange(2**31))
        for index, name in zip(inner, chosen, strict=True)
    ]
