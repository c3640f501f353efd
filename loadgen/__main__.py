"""`python -m loadgen publish|verify|expect-rows|seed-files|demo|seed-demo|chaos|bench`."""

import argparse
import math
import os
import sys
from datetime import timedelta
from pathlib import Path

from loadgen.ledger import Ledger
from loadgen.publish import Publisher
from loadgen.report import Progress
from loadgen.seed import SEED_SERVICES, write_request_files
from loadgen.traffic import (
    DEFAULT_MIX,
    UNKNOWN_SERVICE,
    Replay,
    TrafficGenerator,
    TrafficOptions,
    from_file,
    unknown_service_ids,
)
from loadgen.traffic import (
    SCHEMAS as GENERATED,
)
from loadgen.verify import Targets, verify
from schemas.registry import DEFAULT_SCHEMA, SchemaPluginError, event_tables
from stream import names
from stream.launch.catalog import load_catalog
from stream.names import BIGTABLE_ENV, PUBSUB_ENV

LOCAL_TOPIC = names.topic_path(names.LOCAL_PROJECT, names.LOCAL_TOPIC)
LOCAL_DLQ_SUB = names.subscription_path(names.LOCAL_PROJECT, names.LOCAL_DEAD_LETTER_SUBSCRIPTION)


def _mix(text: str) -> dict[str, float]:
    """`consent.v1=0.7,telemetry.v1=0.3`, or bare names with equal weights."""
    try:
        pairs = (part.partition("=") for part in text.split(",") if part)
        return {name.strip(): float(weight or 1) for name, _, weight in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected schema=weight,... (e.g. consent.v1=0.7,telemetry.v1=0.3), got {text!r}"
        ) from None


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _require_emulator(env_var: str, target: str, local: str) -> None:
    if target == local and not os.environ.get(env_var):
        sys.exit(
            f"error: {env_var} is not set, so {local} would mean real GCP. Start the "
            "emulators (`make emulators-up`, then export what it prints) or pass a real target."
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    pub = sub.add_parser("publish", help="publish traffic at a steady rate and keep a ledger")
    pub.add_argument("--rate", type=_positive, required=True, help="messages per second")
    amount = pub.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=int, help="number of messages")
    amount.add_argument("--duration", type=_positive, help="seconds to publish for")
    pub.add_argument("--ledger", type=Path, required=True, help="SQLite file (appended to)")
    pub.add_argument("--topic", default=LOCAL_TOPIC)
    pub.add_argument("--seed", type=int, default=1)
    pub.add_argument(
        "--schema",
        dest="schema_mix",
        type=_mix,
        default=None,
        help="alias of --schema-mix with one schema, e.g. consent.v1",
    )
    pub.add_argument("--schema-mix", type=_mix, default=dict(DEFAULT_MIX))
    pub.add_argument("--invalid-ratio", type=_ratio, default=0.0)
    pub.add_argument("--duplicate-ratio", type=_ratio, default=0.0)
    pub.add_argument("--late-ratio", type=_ratio, default=0.0)
    pub.add_argument("--out-of-order-seconds", type=_positive, default=600.0)
    pub.add_argument("--users", type=int, default=10_000)
    pub.add_argument("--devices", type=int, default=1_000)
    pub.add_argument(
        "--max-message-bytes",
        type=int,
        default=64 * 1024,
        help="the pipeline's --max_message_bytes (for payload_too_large)",
    )
    pub.add_argument(
        "--unknown-service-ratio",
        type=_ratio,
        default=0.0,
        help="share of valid consent messages naming a service outside --service-catalog "
        "(dead-lettered as unknown_service until the catalog lists it)",
    )
    pub.add_argument(
        "--service-catalog",
        type=Path,
        default=None,
        help="the pipeline's --service_catalog file (default: the seed's 25 ids)",
    )
    pub.add_argument(
        "--from-file",
        type=Path,
        help="replay a JSON-lines file, one message body a line (e.g. `seed-files` output)",
    )
    pub.add_argument("--from-file-schema", default=DEFAULT_SCHEMA)
    pub.add_argument(
        "--stamp",
        action="store_true",
        help="with --from-file: add message_timestamp at publish, as the seed's scale_endpoint "
        "function did. Without it, lines without a time are expected to get their publish "
        "time (run the pipeline with --missing_event_time=publish_time).",
    )
    pub.add_argument(
        "--max-event-age-seconds",
        type=_positive,
        default=7 * 24 * 3600,
        help="the pipeline's --max_event_age_seconds (older replayed lines: dead letters)",
    )

    files = sub.add_parser(
        "seed-files", help="write request files in the seed generator's exact format"
    )
    files.add_argument("--count", type=int, required=True, help="lines in all")
    files.add_argument("--files", type=int, default=4, help="spread over this many files")
    files.add_argument("--seed", type=int, default=1)
    files.add_argument("--out", type=Path, required=True, help="directory (created)")

    ver = sub.add_parser("verify", help="compare the ledger with Bigtable and the dead letters")
    ver.add_argument("--ledger", type=Path, required=True)
    ver.add_argument("--timeout", type=_positive, default=120.0)
    ver.add_argument("--project", default=names.LOCAL_PROJECT)
    ver.add_argument("--instance", default=names.LOCAL_INSTANCE)
    for spec in event_tables().values():
        ver.add_argument(f"--{spec.group}-table", default=spec.default_table_id)
    ver.add_argument("--dead-letter-subscription", default=LOCAL_DLQ_SUB)

    rows = sub.add_parser(
        "expect-rows",
        help="after fixing a cause and redriving its dead letters: expect their rows instead",
    )
    rows.add_argument("--ledger", type=Path, required=True)
    rows.add_argument("--reason", default=UNKNOWN_SERVICE, help="the dead-letter kind fixed")

    demo = sub.add_parser("demo", help="emulators + pipeline + 5,000 messages + verify")
    demo.add_argument("--count", type=int, default=5000)
    demo.add_argument("--rate", type=_positive, default=500.0)
    demo.add_argument("--keep", action="store_true", help="leave the emulators running")

    seed_demo = sub.add_parser(
        "seed-demo", help="the seed's flow: request file -> replay -> pipeline -> verify -> lookups"
    )
    seed_demo.add_argument("--count", type=int, default=5000)
    seed_demo.add_argument("--rate", type=_positive, default=500.0)
    seed_demo.add_argument(
        "--unstamped",
        action="store_true",
        help="replay the lines as they are; the pipeline stamps them with --missing_event_time"
        "=publish_time (instead of stamping at replay, as scale_endpoint did)",
    )
    seed_demo.add_argument("--keep", action="store_true", help="leave the emulators running")

    chaos = sub.add_parser(
        "chaos",
        help="a soak: own emulators, fault proxies and pipeline; seeded faults and kills; "
        "exit code = the verdict",
    )
    chaos.add_argument("--minutes", type=_positive, default=2.0)
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--rate", type=_positive, default=100.0, help="messages per second")
    chaos.add_argument(
        "--work-dir", type=Path, default=Path(".run/chaos"), help="logs, ledger, chaos.json"
    )
    bench = sub.add_parser("bench", help="pipeline vs raw-client ceiling; bench/results.json")
    bench.add_argument("--output", type=Path, default=Path("bench"))
    bench.add_argument("--quick", action="store_true", help="short steps (smoke run)")
    bench.add_argument("--backlog", type=int, default=200_000, help="messages for the RSS run")
    bench.add_argument(
        "--phases",
        default="ceiling,drain,million,steps,profile,direct,state,faults,chaos",
        help="comma-separated subset of ceiling,drain,million,steps,profile,direct,state,"
        "faults,chaos (chaos alone: only that key of results.json is rewritten)",
    )
    bench.add_argument(
        "--configs",
        default="on,off",
        help="pipeline configs to run: rollups on, off, or on,off",
    )
    return parser


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish and print the achieved rate; exit 1 if any message finally failed."""
    if args.count is not None and args.count < 0:
        sys.exit("error: --count must not be negative")
    _require_emulator(PUBSUB_ENV, args.topic, LOCAL_TOPIC)
    if args.from_file:
        replay = Replay(
            schema=args.from_file_schema,
            stamp=args.stamp,
            max_message_bytes=args.max_message_bytes,
            max_event_age=timedelta(seconds=args.max_event_age_seconds),
        )
        messages = from_file(args.from_file, replay)
        if args.from_file_schema not in GENERATED:
            print(
                f"publish: {args.from_file_schema} is not a built-in schema: the ledger cannot "
                "predict its rows, so verify will not judge these messages",
                file=sys.stderr,
            )
    else:
        try:
            catalog = frozenset(SEED_SERVICES)
            if args.service_catalog is not None:
                catalog = load_catalog(str(args.service_catalog))
            options = TrafficOptions(
                seed=args.seed,
                schema_mix=args.schema_mix if args.schema_mix is not None else dict(DEFAULT_MIX),
                invalid_ratio=args.invalid_ratio,
                duplicate_ratio=args.duplicate_ratio,
                late_ratio=args.late_ratio,
                out_of_order_seconds=args.out_of_order_seconds,
                users=args.users,
                devices=args.devices,
                max_message_bytes=args.max_message_bytes,
                unknown_service_ratio=args.unknown_service_ratio,
                service_catalog=catalog,
            )
        except ValueError as exc:  # CatalogError is one
            sys.exit(f"error: {exc}")
        try:
            messages = iter(TrafficGenerator(options))
        except ValueError as exc:  # a schema it cannot generate
            sys.exit(f"error: {exc}")
        if options.unknown_service_ratio:
            ids = ", ".join(unknown_service_ids(options.service_catalog))
            print(f"publish: unknown services named: {ids}", file=sys.stderr)
    with Ledger(args.ledger) as ledger:
        progress = Progress(args.rate, args.count, args.duration)
        stats = Publisher(args.topic, ledger, args.rate).run(
            messages, progress, count=args.count, duration=args.duration
        )
        progress.finish(stats)
    return 1 if stats.failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify and print the contract line last; exit 1 unless nothing is wrong."""
    _require_emulator(BIGTABLE_ENV, args.project, names.LOCAL_PROJECT)
    targets = Targets(
        project=args.project,
        instance=args.instance,
        tables={group: getattr(args, f"{group}_table") for group in event_tables()},
        dead_letter_subscription=args.dead_letter_subscription,
    )
    with Ledger(args.ledger) as ledger:
        verdict = verify(ledger, targets, timeout=args.timeout)
    for example in verdict.examples:
        print(f"  {example}")
    if verdict.unjudged:
        print(
            f"  {verdict.unjudged} dead letters of replayed messages whose schema the ledger "
            "cannot predict (a plugin's --from-file): not judged"
        )
    if verdict.too_late:
        print(
            f"  {verdict.too_late} rows arrived too late for their rollup window "
            "(too_late notices; the rows are stored)"
        )
    if verdict.history:
        print(
            f"  {verdict.history} dead letters of messages since redriven into their rows "
            "(expected history)"
        )
    if verdict.redelivered:
        print(
            f"  {verdict.redelivered} dead letters were delivered again after a redelivery "
            "of their original (same deadletter_message_id): counted once"
        )
    print(verdict.line(), flush=True)
    return 0 if verdict.ok else 1


def cmd_expect_rows(args: argparse.Namespace) -> int:
    """Turn the dead-letter expectations of one reason into row expectations."""
    with Ledger(args.ledger) as ledger:
        changed = ledger.expect_rows_for(args.reason)
    print(f"expect-rows: {changed} messages refused as {args.reason} now expect their rows")
    return 0


def cmd_seed_files(args: argparse.Namespace) -> int:
    """Write the files and say where."""
    if args.count < 0 or args.files < 1:
        sys.exit("error: --count must not be negative and --files must be at least 1")
    for path in write_request_files(args.out, args.count, args.files, args.seed):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand."""
    try:  # the event tables (and their --<group>-table flags) include the plugins'
        event_tables()
    except SchemaPluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    if args.command == "publish":
        return cmd_publish(args)
    if args.command == "verify":
        return cmd_verify(args)
    if args.command == "expect-rows":
        return cmd_expect_rows(args)
    if args.command == "seed-files":
        return cmd_seed_files(args)
    if args.command == "demo":
        from loadgen.demo import run_demo

        return run_demo(count=args.count, rate=args.rate, keep=args.keep)
    if args.command == "seed-demo":
        from loadgen.demo import run_seed_demo

        return run_seed_demo(
            count=args.count, rate=args.rate, stamped=not args.unstamped, keep=args.keep
        )
    if args.command == "chaos":
        from loadgen.chaos.soak import Soak

        report = Soak(args.minutes, args.seed, args.rate, args.work_dir).run()
        return 0 if report.ok else 1
    from loadgen.bench.run import run_bench

    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    names = {"on": "rollups on", "off": "rollups off"}
    configs = tuple(names[c] for c in args.configs.split(",") if c in names)
    if not configs or len(configs) != len(args.configs.split(",")):
        sys.exit("error: --configs takes on, off or on,off")
    return run_bench(
        output=args.output,
        quick=args.quick,
        backlog=args.backlog,
        phases_to_run=phases,
        configs=configs,
    )


if __name__ == "__main__":
    sys.exit(main())
