"""Rollup state per event: the pipeline's own per-key state, filled with seed traffic, pickled.

What the runner holds for a rollup window is its `OpenWindow` (stream/pipeline/rollups/
accumulate.py) serialised with PickleCoder; this builds a domain's windows from seed-shaped
events, as the accumulation does, and measures their size per event held. The running
pipeline samples the same figure into the `rollup_state_bytes_per_event` distribution.
"""

import json
import pickle
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from loadgen.seed import seed_request
from schemas.base import format_rfc3339_millis
from schemas.consent import ConsentV1
from stream.pipeline.messages import RawMessage, ValidEvent
from stream.pipeline.rollups.accumulate import OpenWindow
from stream.pipeline.rollups.accumulators import new_accumulator
from stream.pipeline.rollups.facts import member
from stream.pipeline.rollups.windows import Windowing


def consent_state_bytes_per_event(
    events: int, windows: int, users: int, seed: int = 1
) -> dict[str, Any]:
    """One domain's state holding `events` over `windows` windows; `users` distinct per window.

    Users are drawn from a pool of `users` (cycled), so a window of `events / windows`
    events has min(users, events / windows) distinct users.
    """
    rng = random.Random(seed)  # noqa: S311 - traffic, not cryptography
    grid = Windowing.of(timedelta(seconds=60), timedelta(hours=1))
    start = datetime(2026, 11, 24, tzinfo=UTC)
    pool = [seed_request(rng)["user"] for _ in range(users)]
    state: dict[int, OpenWindow] = {}  # one state cell per window: what the runner holds
    for i in range(events):
        request = seed_request(rng)
        request["user"] = pool[i % users]
        request["domain"] = "example.com"
        when = start + timedelta(seconds=60 * windows * i / events, milliseconds=i % 997)
        request["message_timestamp"] = format_rfc3339_millis(when)
        event = ConsentV1.model_validate_json(json.dumps(request))
        observed = member(ValidEvent(event, RawMessage(b"")))
        if observed is None:
            raise TypeError("a consent event always has a rollup fact")
        item = observed[2]
        begin = grid.start(item.event_ms)
        window = state.setdefault(begin, OpenWindow(new_accumulator("consent")))
        window.acc.add(item.fact)
    size = sum(len(pickle.dumps(w, protocol=pickle.HIGHEST_PROTOCOL)) for w in state.values())
    return {
        "events": events,
        "windows": windows,
        "distinct_users": users,
        "bytes": size,
        "bytes_per_event": round(size / events, 1),
    }


def measure_state() -> dict[str, Any]:
    """Bytes per event: every event a new user (the seed), and ten events per user."""
    return {
        "consent, a new user per event (the seed's traffic)": consent_state_bytes_per_event(
            60_000, 60, 60_000
        ),
        "consent, 10 events per user and window": consent_state_bytes_per_event(60_000, 60, 100),
    }
