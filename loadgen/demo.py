"""`make demo` and `make seed-demo`: fresh emulators, the pipeline, a load, a verify.

`demo` publishes mixed generated traffic. `seed-demo` runs the seed product's flow: a request
file in its generator's format, replayed as its `scale_endpoint` function re-published it
(or unstamped, for the pipeline's publish-time option), the pipeline, the verify, and a few
lookups over HTTP. Either exits with verify's code (0 only when nothing was lost).
"""

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from loadgen.ledger import Ledger
from loadgen.lookup_server import LookupServer
from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.report import Progress
from loadgen.seed import write_request_files
from loadgen.traffic import Planned, Replay, TrafficGenerator, TrafficOptions, from_file
from loadgen.verify import Targets, Verdict, verify
from schemas.registry import event_tables
from stream import names
from stream.launch.options import to_config
from stream.local import environment as local
from stream.local.emulators import Emulators

RUN_DIR = Path(".run")
TOPIC = names.topic_path(names.LOCAL_PROJECT, names.LOCAL_TOPIC)
TARGETS = Targets(
    project=names.LOCAL_PROJECT,
    instance=names.LOCAL_INSTANCE,
    tables={group: spec.default_table_id for group, spec in event_tables().items()},
    dead_letter_subscription=names.subscription_path(
        names.LOCAL_PROJECT, names.LOCAL_DEAD_LETTER_SUBSCRIPTION
    ),
)


def _echo_status(pipeline: PipelineProcess, stop: threading.Event) -> None:
    """Show the pipeline's own status lines while the demo runs."""
    while not stop.wait(1.0):
        for line in pipeline.new_lines("status:"):
            print(f"  pipeline | {line.split('status: ', 1)[-1]}", flush=True)


def _where_to_look(env: Emulators, kept: bool) -> None:
    exports = " ".join(f"{e.env_var}={e.address}" for e in env.started)
    cbt = f"cbt -project {names.LOCAL_PROJECT} -instance {names.LOCAL_INSTANCE}"
    print("\nwhere to look:")
    if not kept:
        print("  (the emulators are stopped now; `make demo ARGS=--keep` leaves them up)")
    print(f"  {exports} {cbt} count scale-traffic")
    print(f"  {exports} {cbt} read scale-traffic count=3")
    print(f"  {exports} {cbt} read telemetry count=3")
    print("  .run/demo-pipeline.log has the pipeline's log; .run/demo-*.sqlite the ledger")


@dataclass
class _Session:
    env: Emulators
    pipeline: PipelineProcess
    stamp: str


@contextmanager
def _session(pipeline_flags: Iterable[str], keep: bool) -> Iterator[_Session]:
    """Fresh emulators with the local resources and the pipeline running, echoing its status."""
    RUN_DIR.mkdir(exist_ok=True)
    with ExitStack() as stack:
        env = Emulators(log_dir=RUN_DIR, reuse_env=False)
        env.__enter__()
        if not keep:
            stack.callback(env.stop)
        for emulator in env.started:
            print(f"demo: {emulator.name} emulator at {emulator.address}", flush=True)
        local.provision(to_config(PipelineOptions(["--streaming"])))
        flags = ["--streaming", "--status_interval_seconds=3", *pipeline_flags]
        pipeline = PipelineProcess(flags, RUN_DIR / "demo-pipeline.log")
        stack.callback(pipeline.stop)
        stop_echo = threading.Event()
        threading.Thread(target=_echo_status, args=(pipeline, stop_echo), daemon=True).start()
        stack.callback(stop_echo.set)
        session = _Session(env, pipeline, datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
        yield session
        if keep:
            state = {e.env_var: {"address": e.address, "pid": e.process.pid} for e in env.started}
            local.STATE_FILE.write_text(json.dumps(state, indent=2))
        _where_to_look(env, keep)


def _load(messages: Iterator[Planned], ledger: Ledger, rate: float, count: int) -> Verdict:
    progress = Progress(rate, count, None)
    stats = Publisher(TOPIC, ledger, rate).run(messages, progress, count=count)
    progress.finish(stats)
    return verify(ledger, TARGETS, timeout=120)


def _report(session: _Session, verdict: Verdict) -> None:
    if not session.pipeline.alive():
        print(f"demo: the pipeline exited early; see {session.pipeline.log_path}")
    for example in verdict.examples:
        print(f"  {example}")


def run_demo(count: int, rate: float, keep: bool) -> int:
    """Run the demo; return verify's exit code (0 only when nothing was lost)."""
    with _session([], keep) as session:
        traffic = TrafficOptions(
            seed=int(datetime.now(UTC).timestamp()),
            invalid_ratio=0.05,
            duplicate_ratio=0.02,
            late_ratio=0.1,
        )
        print(f"demo: publishing {count} mixed messages at {rate:.0f}/s", flush=True)
        with Ledger(RUN_DIR / f"demo-{session.stamp}.sqlite") as ledger:
            verdict = _load(iter(TrafficGenerator(traffic)), ledger, rate, count)
        _report(session, verdict)
    print(verdict.line(), flush=True)
    return 0 if verdict.ok else 1


def _lookup(url: str, key: str) -> dict[str, object]:
    domain, user = key.split("#", 1)
    query = urllib.parse.urlencode({"domain": domain, "user": user})
    with urllib.request.urlopen(f"{url}/?{query}", timeout=10) as answer:  # noqa: S310 - loopback
        return dict(json.load(answer))


def _show_lookups(ledger: Ledger, how_many: int = 3) -> bool:
    """Look a few stored rows up over HTTP; True when each answers with its ledger services."""
    table = TARGETS.tables["consent"]
    agree = True
    with LookupServer(names.LOCAL_PROJECT, names.LOCAL_INSTANCE, table) as server:
        print(f"  (functions-framework at {server.url})")
        for events in ledger.expected_rows("consent"):
            if how_many == 0:
                break
            how_many -= 1
            key, expected = events[-1].row_key, json.loads(events[-1].cells["cf1:services"])
            answer = _lookup(server.url, key)
            same = answer.get("services") == expected
            agree = agree and same
            services = answer.get("services")
            count = len(services) if isinstance(services, list) else "?"
            verdict = "as the request line" if same else "DIFFERS from the request line"
            print(
                f"  GET /?domain={key.replace('#', '&user=')} -> {count} services, "
                f"message_timestamp {answer.get('message_timestamp')}: {verdict}"
            )
    return agree


def run_seed_demo(count: int, rate: float, stamped: bool, keep: bool) -> int:
    """The seed's flow end to end; verify's exit code, or 1 if a lookup disagrees."""
    flags = [] if stamped else ["--missing_event_time=publish_time"]
    with _session(flags, keep) as session:
        (path,) = write_request_files(RUN_DIR / f"seed-{session.stamp}", count, 1, seed=1)
        how = "stamped as scale_endpoint did" if stamped else "unstamped (publish time)"
        print(f"demo: replaying {count} seed request lines from {path}, {how}, at {rate:.0f}/s")
        with Ledger(RUN_DIR / f"demo-{session.stamp}.sqlite") as ledger:
            verdict = _load(from_file(path, Replay(stamp=stamped)), ledger, rate, count)
            _report(session, verdict)
            print("demo: lookups over HTTP (the seed's third-party endpoint, done right)")
            lookups_agree = _show_lookups(ledger)
    print(verdict.line(), flush=True)
    return 0 if verdict.ok and lookups_agree else 1
