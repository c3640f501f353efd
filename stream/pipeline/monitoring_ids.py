"""Disjoint monitoring short ids per SDK worker process (Prism with a rollup worker process).

An SDK worker names each metric it reports by a short id it assigns itself, counting from 1
(`sdk_worker.SHORT_ID_CACHE`); Prism 2.77 keeps one short-id table per job
(`jobservices/metrics.go`, `metricsStore.shortIDsToKeys`), not one per worker. With two
worker processes the same id names different metrics, and Prism panicked decoding one
metric's payload as another's ("error decoding metrics beam:metric:sampled_byte_size:v1"),
failing the job. Each process counts from its own base (its pid, shifted) instead: the ids
stay opaque strings, only their values differ.

Only when the launcher asked for it (`SEPARATE_IDS` in the environment, inherited by the
worker processes it spawns); elsewhere, e.g. on Dataflow, nothing changes.
"""

import os

from apache_beam.runners.worker import sdk_worker

SEPARATE_IDS = "STREAM_SEPARATE_MONITORING_IDS"


def separate_short_ids() -> None:
    """Move this process's next short ids to a range of its own (idempotent)."""
    if not os.environ.get(SEPARATE_IDS):
        return
    cache = sdk_worker.SHORT_ID_CACHE
    base = os.getpid() << 32
    with cache._lock:
        if cache._last_short_id < base:
            cache._last_short_id = base
