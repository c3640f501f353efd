"""Every flag of the pipeline, and their validation into an IngestConfig at startup."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from schemas.base import parse_event_time
from schemas.registry import DEFAULT_SCHEMA, SCHEMA_ATTRIBUTE, schemas
from stream import names
from stream.launch.catalog import CatalogError, load_catalog
from stream.pipeline import config as cfg
from stream.pipeline.tables import tables as all_tables
from stream.pipeline.validate import EventTimeFallback, MissingEventTime, ParseRules

SUBSCRIPTION_RE = re.compile(
    r"^projects/([a-z][-a-z0-9:.]{4,61}[a-z0-9])/subscriptions/([^/]{3,255})$"
)
TOPIC_RE = re.compile(r"^projects/([a-z][-a-z0-9:.]{4,61}[a-z0-9])/topics/([^/]{3,255})$")
PROJECT_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
INSTANCE_RE = re.compile(r"^[a-z][-a-z0-9]{4,31}[a-z0-9]$")
TABLE_RE = re.compile(r"^[-_.a-zA-Z0-9]{1,50}$")
DATAFLOW = "DataflowRunner"
PRISM = "PrismRunner"


class ConfigError(ValueError):
    """Invalid flags: the message lists every problem and what to change."""


class IngestOptions(PipelineOptions):
    """Flags of the ingestion pipeline (all Beam flags work as usual beside them)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        group = parser.add_argument_group("ingestion")
        group.add_argument(
            "--subscription",
            default=None,
            help="Input: projects/<p>/subscriptions/<s>. Default: the local emulator's "
            f"{names.LOCAL_SUBSCRIPTION}.",
        )
        group.add_argument(
            "--dead_letter_topic",
            default=None,
            help="Dead letters: projects/<p>/topics/<t>. Default: <subscription project>/"
            f"{names.LOCAL_DEAD_LETTER_TOPIC}.",
        )
        group.add_argument(
            "--bigtable_project",
            default=None,
            help="Bigtable project. Default: --project, else the subscription's project.",
        )
        group.add_argument("--bigtable_instance", default=names.LOCAL_INSTANCE)
        for spec in all_tables().values():
            group.add_argument(
                f"--{spec.group}_table",
                default=spec.default_table_id,
                help=f"Table for {spec.group} events (families: {', '.join(spec.families)}).",
            )
        group.add_argument("--default_schema", default=DEFAULT_SCHEMA, help="When no attribute.")
        group.add_argument("--schema_attribute", default=SCHEMA_ATTRIBUTE)
        group.add_argument("--max_message_bytes", type=int, default=64 * 1024)
        group.add_argument(
            "--max_event_age_seconds",
            type=int,
            default=None,
            help="Older event times are dead-lettered. Default: 7 days (Pub/Sub retention) "
            "when streaming, no limit for a backfill (--input).",
        )
        group.add_argument("--max_future_skew_seconds", type=int, default=300)
        group.add_argument(
            "--missing_event_time",
            default=str(MissingEventTime.REJECT),
            help="A message without an event time: reject (dead letter, missing_field); "
            "publish_time (streaming: its Pub/Sub publish time, what the seed's scale_endpoint "
            "function stamped); file_mtime (backfill: the file's modification time); or an "
            "RFC 3339 instant (backfill: e.g. 2021-03-05T00:00:00Z). Never the wall clock: "
            "a replay must rewrite the same cells.",
        )
        group.add_argument(
            "--service_catalog",
            default=None,
            help="File (local or gs://) listing the known service ids, one per line or a JSON "
            "list; an id outside it is dead-lettered as unknown_service. Default: any "
            "well-formed id.",
        )
        group.add_argument(
            "--rollups",
            choices=("on", "off"),
            default=None,
            help="Per-window aggregates per domain and per device (the rollup table). Default: "
            "on when streaming, off for a backfill (a partial archive would overwrite a "
            "window's full aggregate).",
        )
        group.add_argument(
            "--rollup_worker",
            choices=("auto", "thread", "process"),
            default="auto",
            help="Where the keyed rollup stages run: in the SDK worker of the rows (thread) or "
            "in a worker process of their own (process, Prism only: a second GIL, about "
            "200 MiB more memory). auto: process on Prism with rollups on, else thread.",
        )
        group.add_argument(
            "--ingest_processes",
            choices=("auto", "1", "2"),
            default="auto",
            help="Processes that pull, validate, write and acknowledge: 1 (the launching "
            "process) or 2 (and the worker process the rollups use: a second GIL under "
            "load; Prism only). auto: 2 on Prism, else 1.",
        )
        group.add_argument(
            "--patches",
            choices=("on", "off"),
            default="on",
            help="on: the patches of Beam, Prism and Bigtable-client internals listed in "
            "stream/DESIGN.md (Patches), checked against the library versions they were "
            "written for; off: stock libraries (slower; on Prism, rollups in the rows' "
            "worker and no status line).",
        )
        group.add_argument(
            "--input",
            default=None,
            help="Backfill: read JSON-lines files (glob; any Beam filesystem) in batch "
            "instead of Pub/Sub; one message body per line. No --streaming.",
        )
        group.add_argument(
            "--input_schema",
            default=None,
            help="Schema of the --input lines. Default: --default_schema.",
        )
        group.add_argument(
            "--window_seconds", type=int, default=60, help="Rollup window (event time)."
        )
        group.add_argument(
            "--allowed_lateness_seconds",
            type=int,
            default=3600,
            help="How late an event may be and still update its window's rollup.",
        )
        group.add_argument(
            "--write_batch_rows", type=int, default=500, help="Rows per MutateRows request."
        )
        group.add_argument(
            "--write_timeout_seconds",
            type=int,
            default=60,
            help="Deadline of one MutateRows attempt (a timed-out attempt is retried).",
        )
        group.add_argument(
            "--write_retry_seconds",
            type=int,
            default=int(cfg.DEFAULT_WRITE_RETRY.total_seconds()),
            help="How long a batch may back off in place on transient Bigtable errors "
            "(RESOURCE_EXHAUSTED, UNAVAILABLE, ...), retrying only the failed rows, before "
            "its bundle fails. 0: fail the bundle at the first transient error.",
        )
        group.add_argument(
            "--record_ingest_time",
            action="store_true",
            default=False,
            help="Also write cf `ingested_at` (wall clock) to measure publish->row latency.",
        )
        group.add_argument(
            "--pull_max_messages", type=int, default=1000, help="Messages per batch (bundle)."
        )
        group.add_argument(
            "--pull_fill_ms",
            type=int,
            default=500,
            help="The longest a partial batch waits for more messages (latency vs CPU per "
            "message; adaptive below it: none under a backlog or sparse traffic).",
        )
        group.add_argument(
            "--readers",
            type=int,
            default=2,
            help="Pullers (portable runners); all but one help only under a backlog.",
        )
        group.add_argument(
            "--max_lease_seconds",
            type=int,
            default=3600,
            help="Pull source: how long after the pull a message still being worked on keeps "
            "its lease (its ack deadline is extended until then). At least "
            "--write_retry_seconds.",
        )
        group.add_argument("--id_label", default=None, help="Dataflow only: dedup attribute.")
        group.add_argument(
            "--timestamp_attribute", default=None, help="Dataflow only: event-time attribute."
        )
        group.add_argument(
            "--emulators",
            choices=("auto", "on", "off"),
            default="auto",
            help="auto: use (or start) local emulators unless --subscription or Dataflow.",
        )
        group.add_argument(
            "--status_interval_seconds", type=int, default=5, help="0 disables the status line."
        )
        group.add_argument(
            "--max_restarts",
            type=int,
            default=5,
            help="Local runners: restart a failed pipeline up to this many times in a row.",
        )


# Beam resolves --runner case-insensitively, with or without the "Runner" suffix, and
# accepts dotted paths: map every spelling to the canonical class name.
_CANONICAL_RUNNERS: dict[str, str] = {
    name.lower().removesuffix("runner"): name for name in StandardOptions.KNOWN_RUNNER_NAMES
}


def runner_name(options: PipelineOptions) -> str:
    """The runner's canonical class name, e.g. `prism` -> PrismRunner ('' when not given)."""
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return ""
    if not isinstance(runner, str):
        return type(runner).__name__
    key = runner.rsplit(".", 1)[-1].lower().removesuffix("runner")
    return _CANONICAL_RUNNERS.get(key, str(runner))


def uses_emulators(options: PipelineOptions) -> bool:
    """Whether this run targets local emulators (the embedded default)."""
    ingest = options.view_as(IngestOptions)
    if ingest.emulators != "auto":
        return bool(ingest.emulators == "on")
    return ingest.subscription is None and runner_name(options) != DATAFLOW


def _not_installed(schema: str) -> str:
    """What to do about a schema no installed package provides."""
    return (
        f"no installed package provides it; installed: {', '.join(sorted(schemas()))} "
        "(install the plugin that does: README, Your own message types)"
    )


def _range(errors: list[str], flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        errors.append(f"--{flag}={value}: must be between {low} and {high}")


def _event_time_fallback(errors: list[str], value: str, backfill: bool) -> EventTimeFallback:
    flag = f"--missing_event_time={value}"
    try:
        mode = MissingEventTime(value)
    except ValueError:
        try:
            instant = parse_event_time(value)
        except ValueError as exc:
            errors.append(
                f"{flag}: choose reject, publish_time, file_mtime or an RFC 3339 instant ({exc})"
            )
            return EventTimeFallback()
        if not backfill:
            errors.append(f"{flag}: a fixed instant is for a backfill (--input) only")
        elif instant > datetime.now(UTC):
            errors.append(f"{flag}: the instant is in the future")
        return EventTimeFallback(MissingEventTime.FIXED, instant)
    if mode is MissingEventTime.FIXED:
        errors.append(f"{flag}: give the instant itself, e.g. 2021-03-05T00:00:00Z")
    elif mode is MissingEventTime.PUBLISH_TIME and backfill:
        errors.append(
            f"{flag}: files have no publish time; use file_mtime or a fixed RFC 3339 instant"
        )
    elif mode is MissingEventTime.FILE_MTIME and not backfill:
        errors.append(f"{flag}: only a backfill (--input) reads files; use publish_time")
    return EventTimeFallback(mode)


def _rollup_worker(errors: list[str], choice: str, rollups: bool, runner: str) -> cfg.RollupWorker:
    """--rollup_worker for this runner: `process` only on Prism, `auto` is process there."""
    if choice == "process":
        if not rollups:
            errors.append("--rollup_worker=process needs rollups: drop it or use --rollups=on")
        elif runner == DATAFLOW:
            errors.append("--rollup_worker=process is for Prism: drop it on Dataflow")
        elif runner != PRISM:
            errors.append(
                f"--rollup_worker=process needs Prism, and the runner is {runner or 'none'}: "
                "drop the flag or run `make prism`"
            )
        return cfg.RollupWorker.PROCESS
    if choice == "auto" and rollups and runner == PRISM:
        return cfg.RollupWorker.PROCESS
    return cfg.RollupWorker.THREAD


def _ingest_processes(
    errors: list[str], choice: str, runner: str, patches: bool, backfill: bool
) -> int:
    """--ingest_processes for this run: 2 only on Prism, from Pub/Sub, with the patches."""
    if choice == "2":
        if runner != PRISM:
            errors.append(
                f"--ingest_processes=2 needs Prism, and the runner is {runner or 'none'}: "
                "drop the flag (Dataflow scales with workers)"
            )
        elif backfill:
            errors.append("--ingest_processes=2 reads Pub/Sub: drop it for a backfill (--input)")
        elif not patches:
            errors.append("--ingest_processes=2 is a patch of Beam: drop it or --patches=on")
        return 2
    if choice == "auto" and runner == PRISM and patches and not backfill:
        return 2
    return 1


def _catalog(errors: list[str], path: str | None) -> frozenset[str] | None:
    if path is None:
        return None
    try:
        return load_catalog(path)
    except CatalogError as exc:
        errors.append(f"--service_catalog={exc}")
        return None


def to_config(options: PipelineOptions) -> cfg.IngestConfig:
    """Validate the flags and build the run's IngestConfig; raise ConfigError listing problems."""
    ingest = options.view_as(IngestOptions)
    errors: list[str] = []
    streaming = bool(options.view_as(StandardOptions).streaming)
    if ingest.input is None and not streaming:
        errors.append(
            "--streaming is required: Pub/Sub is an unbounded source "
            "(or --input <files> for a batch backfill)"
        )
    if ingest.input is not None and streaming:
        errors.append("--input is a batch backfill: drop --streaming")
    input_schema = ingest.input_schema or ingest.default_schema
    if ingest.input_schema is not None and input_schema not in schemas():
        errors.append(f"--input_schema={input_schema}: {_not_installed(input_schema)}")
    max_age = ingest.max_event_age_seconds
    if max_age is None:
        max_age = 7 * 24 * 3600 if ingest.input is None else 100 * 366 * 24 * 3600
    rollups = ingest.rollups == "on" if ingest.rollups else ingest.input is None
    patches = ingest.patches == "on"
    runner = runner_name(options)
    rollup_worker = _rollup_worker(errors, ingest.rollup_worker, rollups, runner)
    if rollup_worker is cfg.RollupWorker.PROCESS and not patches:
        if ingest.rollup_worker == "process":
            errors.append("--rollup_worker=process is a patch of Beam: drop it or --patches=on")
        rollup_worker = cfg.RollupWorker.THREAD
    ingest_processes = _ingest_processes(
        errors, ingest.ingest_processes, runner, patches, ingest.input is not None
    )
    subscription = ingest.subscription or names.subscription_path(
        names.LOCAL_PROJECT, names.LOCAL_SUBSCRIPTION
    )
    if runner == DATAFLOW and ingest.subscription is None:
        errors.append("--subscription is required on Dataflow (projects/<p>/subscriptions/<s>)")
    match = SUBSCRIPTION_RE.match(subscription)
    project = match.group(1) if match else names.LOCAL_PROJECT
    if not match:
        errors.append(f"--subscription={subscription}: expected projects/<p>/subscriptions/<s>")
    default_dead_letter = names.topic_path(project, names.LOCAL_DEAD_LETTER_TOPIC)
    dead_letter = ingest.dead_letter_topic or default_dead_letter
    if not TOPIC_RE.match(dead_letter):
        errors.append(f"--dead_letter_topic={dead_letter}: expected projects/<p>/topics/<t>")
    bt_project = ingest.bigtable_project or options.view_as(GoogleCloudOptions).project or project
    if not PROJECT_RE.match(bt_project):
        errors.append(f"--bigtable_project={bt_project}: a project id is 6-30 of [-a-z0-9]")
    if not INSTANCE_RE.match(ingest.bigtable_instance):
        errors.append(
            f"--bigtable_instance={ingest.bigtable_instance}: an instance id is 6-33 of [-a-z0-9]"
        )
    tables = {group: getattr(ingest, f"{group}_table") for group in all_tables()}
    for group, table_id in tables.items():
        if not TABLE_RE.match(table_id):
            errors.append(f"--{group}_table={table_id}: a table id is 1-50 of [-_.a-zA-Z0-9]")
    if ingest.default_schema not in schemas():
        errors.append(
            f"--default_schema={ingest.default_schema}: {_not_installed(ingest.default_schema)}"
        )
    _range(errors, "max_message_bytes", ingest.max_message_bytes, 1, 10 * 1024 * 1024)
    # Streaming: at most a year (Pub/Sub keeps 7 days); a backfill may reach far back.
    max_age_limit = 366 * 24 * 3600 if ingest.input is None else 100 * 366 * 24 * 3600
    _range(errors, "max_event_age_seconds", max_age, 1, max_age_limit)
    _range(errors, "max_future_skew_seconds", ingest.max_future_skew_seconds, 0, 24 * 3600)
    fallback = _event_time_fallback(errors, ingest.missing_event_time, ingest.input is not None)
    catalog = _catalog(errors, ingest.service_catalog)
    _range(errors, "window_seconds", ingest.window_seconds, 1, 24 * 3600)
    _range(errors, "allowed_lateness_seconds", ingest.allowed_lateness_seconds, 0, 7 * 24 * 3600)
    # MutateRows allows 100,000 mutations per request; a row here has at most ~70 cells.
    _range(errors, "write_batch_rows", ingest.write_batch_rows, 1, 1000)
    _range(errors, "write_timeout_seconds", ingest.write_timeout_seconds, 1, 600)
    _range(errors, "write_retry_seconds", ingest.write_retry_seconds, 0, 24 * 3600)
    _range(errors, "max_lease_seconds", ingest.max_lease_seconds, 0, 24 * 3600)
    if ingest.max_lease_seconds < ingest.write_retry_seconds:
        errors.append(
            f"--max_lease_seconds={ingest.max_lease_seconds}: must be at least "
            f"--write_retry_seconds ({ingest.write_retry_seconds}), or a message whose write "
            "is still backing off would be delivered again"
        )
    _range(errors, "pull_max_messages", ingest.pull_max_messages, 1, 1000)
    _range(errors, "pull_fill_ms", ingest.pull_fill_ms, 0, 10_000)
    _range(errors, "readers", ingest.readers, 1, 16)
    _range(errors, "status_interval_seconds", ingest.status_interval_seconds, 0, 3600)
    _range(errors, "max_restarts", ingest.max_restarts, 0, 1000)
    if runner != DATAFLOW:
        for flag in ("id_label", "timestamp_attribute"):
            if getattr(ingest, flag):
                errors.append(f"--{flag} is only supported on Dataflow's native Pub/Sub read")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg.IngestConfig(
        pubsub=cfg.PubSubEndpoints(
            subscription=subscription,
            dead_letter_topic=dead_letter,
            pull_max_messages=ingest.pull_max_messages,
            pull_fill=timedelta(milliseconds=ingest.pull_fill_ms),
            readers=ingest.readers,
            max_lease=timedelta(seconds=ingest.max_lease_seconds),
            id_label=ingest.id_label,
            timestamp_attribute=ingest.timestamp_attribute,
        ),
        bigtable=cfg.BigtableTarget(
            project=bt_project,
            instance=ingest.bigtable_instance,
            tables=tables,
            batch_rows=ingest.write_batch_rows,
            timeout=timedelta(seconds=ingest.write_timeout_seconds),
            record_ingest_time=ingest.record_ingest_time,
            retry=timedelta(seconds=ingest.write_retry_seconds),
            raw_entries=patches,
        ),
        rules=ParseRules(
            default_schema=ingest.default_schema,
            schema_attribute=ingest.schema_attribute,
            max_message_bytes=ingest.max_message_bytes,
            max_event_age=timedelta(seconds=max_age),
            max_future_skew=timedelta(seconds=ingest.max_future_skew_seconds),
            service_catalog=catalog,
            missing_event_time=fallback,
        ),
        rollups=rollups,
        rollup_worker=rollup_worker,
        ingest_processes=ingest_processes,
        patches=patches,
        input_pattern=ingest.input,
        input_schema=input_schema,
        window=timedelta(seconds=ingest.window_seconds),
        allowed_lateness=timedelta(seconds=ingest.allowed_lateness_seconds),
        # Prism's metrics would never move without the fresh_metrics patch: no status line.
        status_interval=timedelta(
            seconds=ingest.status_interval_seconds if patches or runner != PRISM else 0
        ),
        max_restarts=ingest.max_restarts,
    )
