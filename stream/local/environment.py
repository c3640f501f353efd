"""The embedded default: local emulators (reused or started) and the resources a run needs.

Also a small CLI for the Makefile: `python -m stream.local up|down|status`.
"""

import argparse
import json
import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from stream import names
from stream.local import emulators
from stream.local.provision import ensure_pubsub, ensure_tables
from stream.pipeline import config as cfg
from stream.pipeline.config import required_ack_deadline

_LOG = logging.getLogger(__name__)
RUN_DIR = Path(".run")
STATE_FILE = RUN_DIR / "emulators.json"


def provision(config: cfg.IngestConfig) -> None:
    """Create, idempotently, everything a local run uses (topic name from the subscription)."""
    project = config.pubsub.project
    sub_name = config.pubsub.subscription.rsplit("/", 1)[1]
    topic_name = sub_name.removesuffix("-sub") if sub_name.endswith("-sub") else names.LOCAL_TOPIC
    dead_letter = config.pubsub.dead_letter_topic
    ensure_pubsub(
        topic=names.topic_path(project, topic_name),
        subscription=config.pubsub.subscription,
        dead_letter_topic=dead_letter,
        dead_letter_subscription=names.subscription_path(
            project, dead_letter.rsplit("/", 1)[1] + "-sub"
        ),
        ack_deadline=max(120, required_ack_deadline(config)),
    )
    ensure_tables(config.bigtable)


def local_environment(stack: ExitStack, log_dir: Path | None = None) -> emulators.Emulators:
    """Reuse emulators named by *_EMULATOR_HOST; start the missing ones on standard ports.

    What this starts stops when `stack` closes.
    """
    return stack.enter_context(
        emulators.Emulators(
            pubsub_port=emulators.DEFAULT_PUBSUB_PORT,
            bigtable_port=emulators.DEFAULT_BIGTABLE_PORT,
            log_dir=log_dir,
        )
    )


def _up(args: argparse.Namespace) -> int:
    RUN_DIR.mkdir(exist_ok=True)
    if STATE_FILE.exists():
        print(f"emulators already up (see {STATE_FILE}); `make emulators-down` first")
        return 0
    started = [
        emulators.start_pubsub(args.pubsub_port, RUN_DIR),
        emulators.start_bigtable(args.bigtable_port, RUN_DIR),
    ]
    state = {e.env_var: {"address": e.address, "pid": e.process.pid} for e in started}
    STATE_FILE.write_text(json.dumps(state, indent=2))
    for emulator in started:
        print(f"export {emulator.env_var}={emulator.address}")
    return 0


def _down(_: argparse.Namespace) -> int:
    if not STATE_FILE.exists():
        print("no emulators recorded as running")
        return 0
    state = json.loads(STATE_FILE.read_text())
    for env_var, entry in state.items():
        try:
            os.killpg(entry["pid"], signal.SIGTERM)
            print(f"stopped {env_var} emulator (pid {entry['pid']})")
        except ProcessLookupError:
            print(f"{env_var} emulator (pid {entry['pid']}) was not running")
    STATE_FILE.unlink()
    return 0


def _status(_: argparse.Namespace) -> int:
    if not STATE_FILE.exists():
        print("emulators: down")
        return 1
    print(STATE_FILE.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point for the Makefile's emulators-up / emulators-down."""
    parser = argparse.ArgumentParser(prog="python -m stream.local")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start both emulators in the background")
    up.add_argument("--pubsub-port", type=int, default=emulators.DEFAULT_PUBSUB_PORT)
    up.add_argument("--bigtable-port", type=int, default=emulators.DEFAULT_BIGTABLE_PORT)
    sub.add_parser("down", help="stop the emulators started by `up`")
    sub.add_parser("status", help="print what `up` started")
    args = parser.parse_args(argv)
    try:
        return int({"up": _up, "down": _down, "status": _status}[args.command](args))
    except emulators.EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
