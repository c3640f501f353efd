"""What each scheduled action does: a rule on a fault proxy, or a SIGKILL of one process."""

import random
import signal
from collections.abc import Callable

import grpc
import psutil

from loadgen.chaos.schedule import Action
from tests.faults.proxy import FaultProxy
from tests.faults.pubsub_proxy import SHORT_NAMES, TRANSIENT_CODES, PubSubFaultProxy


def on_bigtable(action: Action, proxy: FaultProxy) -> None:
    """Set the action's rule on the Bigtable proxy (until its reset at the slot's end)."""
    rng = random.Random(action.seed)
    if action.name == "bigtable_outage":
        proxy.outage(action.seconds)
    elif action.name == "bigtable_overload":
        proxy.fail_entries(0.2, codes=(grpc.StatusCode.RESOURCE_EXHAUSTED,), seed=action.seed)
    elif action.name == "bigtable_errors":
        proxy.fail_calls(0.2, code=rng.choice(TRANSIENT_CODES), seed=action.seed)
        proxy.fail_entries(0.05, codes=TRANSIENT_CODES, seed=action.seed)
    elif action.name == "bigtable_slow":
        proxy.delay_calls(1.0, ratio=0.3, seed=action.seed)
    else:
        raise ValueError(f"not a Bigtable action: {action.name}")


def on_pubsub(action: Action, proxy: PubSubFaultProxy) -> None:
    """Set the action's rules on the Pub/Sub proxy (until its reset at the slot's end)."""
    if action.name == "pubsub_outage":
        proxy.outage(action.seconds)
    elif action.name == "pubsub_errors":
        for offset, method in enumerate(SHORT_NAMES):
            proxy.fail(method, 0.15, codes=TRANSIENT_CODES, seed=action.seed + offset)
    elif action.name == "pubsub_lost_answers":
        for offset, method in enumerate(SHORT_NAMES):
            ratio = 0.05 if method == "Pull" else 0.2
            proxy.lose_answers(method, ratio, seed=action.seed + offset)
    elif action.name == "pubsub_duplicates":
        proxy.duplicate_deliveries(0.2, seed=action.seed)
        proxy.delay("Pull", 1.0, ratio=0.1, seed=action.seed)
    else:
        raise ValueError(f"not a Pub/Sub action: {action.name}")


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def is_rollup_worker(process: psutil.Process) -> bool:
    """The SDK worker process the launcher's pool spawns for the rollup stages."""
    return "SdkHarness" in " ".join(process.cmdline())


def is_prism(process: psutil.Process) -> bool:
    """Beam's Prism runner, started by the launcher."""
    return process.name().startswith("prism")


def kill_child(launcher_pid: int, which: Callable[[psutil.Process], bool]) -> int | None:
    """SIGKILL the launcher's child that `which` picks; its pid, or None if there is none."""
    for child in _children(launcher_pid):
        try:
            if which(child):
                child.send_signal(signal.SIGKILL)
                return child.pid
        except psutil.Error:
            continue
    return None


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its children, bytes (0 once it is gone)."""
    total = 0
    for process in [psutil.Process(pid), *_children(pid)] if psutil.pid_exists(pid) else []:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total
