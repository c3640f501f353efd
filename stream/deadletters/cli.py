"""`python -m stream.deadletters summary|export|redrive`: inspect, archive, resend letters."""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from schemas.base import parse_event_time
from stream import names
from stream.deadletters.export import export
from stream.deadletters.redrive import DEFAULT_MAX_REDRIVES, RedriveOptions, redrive
from stream.deadletters.selection import Selection
from stream.deadletters.subscription import DeadLetterSubscription
from stream.deadletters.summary import TOP_ERRORS, render, summarize
from stream.names import LOCAL_PROJECT, PUBSUB_ENV

DESCRIPTION = """\
Look at, archive and resend the pipeline's dead letters (`python -m stream.deadletters --help`).

  summary   counts by kind, stage and schema, the most frequent errors; acknowledges nothing
  export    every selected letter as one JSON line (--ack: acknowledged once on disk)
  redrive   selected letters back to the input topic as their original messages

Targets the Pub/Sub emulator (PUBSUB_EMULATOR_HOST, project local-project) unless --project
is given. Exit codes: 0 done, 1 some letters could not be redriven (publish failed, or
refused), 2 invalid arguments or refused target, 3 Pub/Sub error.
"""

EXIT_OK, EXIT_INCOMPLETE, EXIT_INVALID, EXIT_ERROR = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


class CommandError(Exception):
    """A command that cannot run; carries the process exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _time(text: str) -> datetime:
    try:
        return parse_event_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _common(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument(
        "--project", default=None, help=f"default: {LOCAL_PROJECT} on the emulator only"
    )
    parser.add_argument(
        "--subscription",
        default=names.LOCAL_DEAD_LETTER_SUBSCRIPTION,
        help="the dead-letter subscription: a name in --project or projects/<p>/subscriptions/<s>",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=timeout, help=f"seconds in all (default {timeout:.0f})"
    )
    chosen = parser.add_argument_group("selection (every criterion given must match)")
    chosen.add_argument("--kind", action="append", default=[], help="deadletter_kind (repeatable)")
    chosen.add_argument("--schema", action="append", default=[], help="deadletter_schema")
    chosen.add_argument("--stage", action="append", default=[], help="parse, write or rollup")
    chosen.add_argument("--error-contains", default="", help="a text in deadletter_error")
    chosen.add_argument(
        "--published-after",
        type=_time,
        help="RFC 3339, inclusive: when the pipeline refused the message (the letter's own "
        "publish time)",
    )
    chosen.add_argument("--published-before", type=_time, help="RFC 3339, exclusive")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; --project stays None unless given (see `target_project`)."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.deadletters",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="what piled up (acknowledges nothing)")
    _common(summary, timeout=60)
    summary.add_argument("--json", action="store_true", help="one JSON object")
    summary.add_argument("--top", type=_count, default=TOP_ERRORS, help="errors listed")

    exported = commands.add_parser("export", help="letters to a JSON-lines file")
    _common(exported, timeout=600)
    exported.add_argument("--to", type=Path, required=True, help="a new file (never overwritten)")
    exported.add_argument(
        "--ack", action="store_true", help="acknowledge what was written, once it is on disk"
    )

    sent = commands.add_parser("redrive", help="letters back to the input topic")
    _common(sent, timeout=600)
    sent.add_argument(
        "--topic",
        default=names.LOCAL_TOPIC,
        help="where to republish: a name in --project or projects/<p>/topics/<t>",
    )
    sent.add_argument("--limit", type=_count, default=None, help="at most this many letters")
    sent.add_argument(
        "--max_redrives",
        "--max-redrives",
        dest="max_redrives",
        type=_count,
        default=DEFAULT_MAX_REDRIVES,
        help="a letter already redriven this many times is not sent again (reported)",
    )
    sent.add_argument(
        "--drop-exhausted", action="store_true", help="acknowledge (delete) those letters"
    )
    sent.add_argument("--dry-run", action="store_true", help="show what would be sent")
    sent.add_argument("--rate", type=_positive, default=None, help="letters per second at most")
    return parser.parse_args(argv)


def target_project(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The project to use; refuse the local default outside the emulator."""
    if explicit:
        return explicit
    if environ.get(PUBSUB_ENV):
        return LOCAL_PROJECT
    raise CommandError(
        f"{PUBSUB_ENV} is not set and no --project was given: set {PUBSUB_ENV}=host:port to "
        "use the local emulator, or pass --project explicitly to use Pub/Sub in GCP",
        EXIT_INVALID,
    )


def _path(name: str, project: str, spell: Callable[[str, str], str]) -> str:
    return name if name.startswith("projects/") else spell(project, name)


def selection(args: argparse.Namespace) -> Selection:
    """The selection flags."""
    return Selection(
        kinds=frozenset(args.kind),
        schemas=frozenset(args.schema),
        stages=frozenset(args.stage),
        error_contains=args.error_contains,
        published_after=args.published_after,
        published_before=args.published_before,
    )


def _summary(args: argparse.Namespace, sub: DeadLetterSubscription, deadline: float) -> int:
    result = summarize(sub, selection(args), deadline)
    print(
        json.dumps(result.to_json(args.top), sort_keys=True)
        if args.json
        else render(result, args.top)
    )
    return EXIT_OK


def _export(args: argparse.Namespace, sub: DeadLetterSubscription, deadline: float) -> int:
    try:
        result = export(sub, selection(args), args.to, deadline, ack=args.ack)
    except FileExistsError:
        raise CommandError(
            f"{args.to} exists: an export never overwrites a file", EXIT_INVALID
        ) from None
    print(result.line(args.to, args.ack))
    return EXIT_OK


def _redrive(
    args: argparse.Namespace, sub: DeadLetterSubscription, deadline: float, project: str
) -> int:
    options = RedriveOptions(
        topic=_path(args.topic, project, names.topic_path),
        selection=selection(args),
        max_redrives=args.max_redrives,
        drop_exhausted=args.drop_exhausted,
        dry_run=args.dry_run,
        limit=args.limit,
        rate=args.rate,
    )
    publisher = pubsub_v1.PublisherClient()
    try:
        report = redrive(sub, publisher, options, deadline)
    finally:
        publisher.stop()
    for note in report.notes:
        print(f"  {note}")
    print(report.line(args.dry_run), flush=True)
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run one command against its subscription; every letter not settled is released."""
    project = target_project(args.project, environ)
    path = _path(args.subscription, project, names.subscription_path)
    deadline = time.monotonic() + args.timeout
    with pubsub_v1.SubscriberClient() as subscriber:
        sub = DeadLetterSubscription(subscriber, path)
        try:
            if args.command == "summary":
                return _summary(args, sub, deadline)
            if args.command == "export":
                return _export(args, sub, deadline)
            return _redrive(args, sub, deadline, project)
        finally:
            sub.release_all()  # on an error or Ctrl-C too: the letters return at once


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return the process exit code."""
    args = parse_args(argv)
    try:
        return run(args, dict(os.environ))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except gexc.GoogleAPICallError as exc:
        print(f"error: Pub/Sub: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: every letter not yet acknowledged is back", file=sys.stderr)
        return EXIT_INTERRUPTED
