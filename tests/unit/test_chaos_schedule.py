"""The chaos soak's schedule: seeded, calm at both ends, every kind of target met."""

import itertools

from loadgen.chaos.schedule import ACTIONS, SLOT_SECONDS, TARGETS, schedule


def test_the_same_seed_gives_the_same_schedule() -> None:
    assert schedule(20, seed=7) == schedule(20, seed=7)
    assert schedule(20, seed=7) != schedule(20, seed=8)


def test_the_first_and_last_slots_are_calm_and_slots_do_not_overlap() -> None:
    plan = schedule(2, seed=1)
    assert len(plan) == 2 * 60 / SLOT_SECONDS - 2
    assert plan[0].at == SLOT_SECONDS and plan[-1].at + plan[-1].seconds == 2 * 60 - SLOT_SECONDS
    for before, after in itertools.pairwise(plan):
        assert before.at + before.seconds == after.at


def test_every_kind_of_target_is_met_even_in_a_short_soak() -> None:
    for seed in range(50):
        targets = {action.target for action in schedule(2, seed)}
        assert targets == set(TARGETS), seed


def test_a_long_soak_draws_from_every_action() -> None:
    names = {action.name for seed in range(3) for action in schedule(20, seed)}
    assert names == set(ACTIONS)


def test_too_short_a_soak_has_nothing_but_calm() -> None:
    assert schedule(0.5, seed=1) == []
