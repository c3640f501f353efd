"""The chaos soak: faults and kills under steady traffic, then the ledger's and rollups' verdict.

It starts its own emulators, both fault proxies and the pipeline, sends mixed traffic and
runs a seeded schedule (loadgen/chaos/schedule.py).

Kills are restarted the way a user would: a killed launcher is started again; a killed Prism
or rollup worker is the launcher's to recover (it restarts the job), and if the launcher
exits instead, it is started again too. Every restart is counted and reported.
"""

import calendar
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadgen.chaos import actions
from loadgen.chaos.schedule import Action, schedule
from loadgen.ledger import Ledger
from loadgen.process import PipelineProcess
from loadgen.publish import Publisher
from loadgen.report import Progress, PublishStats
from loadgen.resources import PROJECT, LoadTarget, new_target
from loadgen.rollup_oracle import expected_rollups, stored_rollups, window_problems
from loadgen.traffic import TrafficGenerator, TrafficOptions
from loadgen.verify import Verdict, verify
from stream.local.emulators import Emulators
from stream.names import BIGTABLE_ENV, PUBSUB_ENV
from tests.faults.proxy import FaultProxy
from tests.faults.pubsub_proxy import PubSubFaultProxy

WINDOW_SECONDS = 10
LATENESS_SECONDS = 60
WRITE_TIMEOUT_SECONDS = 10
ACK_DEADLINE_SECONDS = 30  # >= 2 x the write timeout + 10 s; a lost pull answer waits this
# A crash loses the rollup state of the windows still open: those that started before it and
# could still take events after it (their end + the lateness, + what faults delay a message).
TOUCHED_AFTER_SECONDS = WINDOW_SECONDS + LATENESS_SECONDS + 120
FLAGS = [
    f"--write_timeout_seconds={WRITE_TIMEOUT_SECONDS}",
    f"--window_seconds={WINDOW_SECONDS}",
    f"--allowed_lateness_seconds={LATENESS_SECONDS}",
    "--max_restarts=10",
]
TICK = 0.5


def traffic(seed: int) -> TrafficOptions:
    """Mixed traffic: both schemas, invalid, duplicate and late messages."""
    return TrafficOptions(
        seed=seed,
        invalid_ratio=0.05,
        duplicate_ratio=0.02,
        late_ratio=0.1,
        out_of_order_seconds=20,  # late, but within the rollups' allowed lateness
        users=2000,
        devices=100,
    )


@dataclass
class SoakReport:
    """What happened, and the verdicts: the ledger's and the rollups'."""

    minutes: float
    seed: int
    rate: float
    schedule: list[str]
    events: list[str] = field(default_factory=list)
    sent: int = 0
    verify: str = ""
    verify_ok: bool = False
    user_restarts: int = 0  # the launcher started again after it died or was killed
    job_restarts: int = 0  # the launcher restarted the job itself
    peak_rss_mib: float = 0.0  # the launcher and its children (Prism, the rollup worker)
    rollups: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing lost, doubled or unexpected; no rollup wrong that a crash does not explain."""
        return self.verify_ok and not self.rollups.get("unexplained")

    def lines(self) -> list[str]:
        """The summary a person reads."""
        r = self.rollups
        return [
            f"chaos: {self.minutes:g} min at {self.rate:g}/s, seed {self.seed}: "
            f"{self.sent} messages sent",
            f"chaos: restarts: {self.user_restarts} of the launcher (as a user would), "
            f"{self.job_restarts} of the job (by the launcher); peak RSS "
            f"{self.peak_rss_mib:.0f} MiB",
            f"chaos: rollups: {r.get('windows', 0)} windows, {r.get('exact', 0)} exact, "
            f"{r.get('touched', 0)} touched by a crash ({r.get('touched_inexact', 0)} of them "
            f"inexact: the documented limit), {len(r.get('unexplained', []))} wrong unexplained",
            *(f"chaos: unexplained: {line}" for line in r.get("unexplained", [])[:10]),
            self.verify,
        ]


class _Pipeline:
    """The pipeline process; restarted when it dies, as a user would."""

    def __init__(self, target: LoadTarget, env: dict[str, str], log: Path) -> None:
        self._flags = [*target.flags, *FLAGS]
        self._env = env
        self._log = log
        self.process = self._start()
        self.restarts = 0
        self.peak_rss = 0
        self._seen_job_restarts = 0

    def _start(self) -> PipelineProcess:
        process = PipelineProcess(self._flags, self._log, env=self._env)
        deadline = time.monotonic() + 120
        while not process.new_lines("status:") and time.monotonic() < deadline:
            if not process.alive():
                break
            time.sleep(TICK)
        return process

    def restart(self) -> None:
        self.process.stop(timeout=30)
        self.process = self._start()
        self.restarts += 1

    def job_restarts(self) -> int:
        """How many times the launcher restarted the job (from its log, all runs)."""
        return self._log.read_text(errors="replace").count("restarting in")

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, actions.tree_rss(self.process.process.pid))


class Soak:
    """One soak run; `run()` returns the report (and prints as it goes)."""

    def __init__(self, minutes: float, seed: int, rate: float, work_dir: Path) -> None:
        self.minutes = minutes
        self.seed = seed
        self.rate = rate
        self.work_dir = work_dir
        self.plan = schedule(minutes, seed)
        self.report = SoakReport(minutes, seed, rate, [a.line() for a in self.plan])
        self.crashes: list[float] = []  # time.time() of every kill and job restart
        self._started = 0.0

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self._started:6.1f}s  {text}"
        self.report.events.append(line)
        print(f"chaos: {line}", flush=True)

    def run(self) -> SoakReport:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        print(f"chaos: seed {self.seed}, {self.minutes:g} min, {self.rate:g}/s; schedule:")
        for line in self.report.schedule:
            print(f"chaos:   {line}", flush=True)
        with Emulators(log_dir=self.work_dir, reuse_env=False) as emulators:
            pubsub_host = next(e.address for e in emulators.started if e.name == "pubsub")
            bigtable_host = next(e.address for e in emulators.started if e.name == "bigtable")
            with (
                FaultProxy(bigtable_host) as bigtable,
                PubSubFaultProxy(pubsub_host) as pubsub,
            ):
                target = new_target("chaos", ack_deadline=ACK_DEADLINE_SECONDS)
                env = {BIGTABLE_ENV: bigtable.address, PUBSUB_ENV: pubsub.address}
                pipeline = _Pipeline(target, env, self.work_dir / "pipeline.log")
                try:
                    self._soak(target, pipeline, bigtable, pubsub)
                finally:
                    pipeline.process.stop(timeout=60)
                self.report.user_restarts = pipeline.restarts
                self.report.job_restarts = pipeline.job_restarts()
                self.report.peak_rss_mib = pipeline.peak_rss / 2**20
        (self.work_dir / "chaos.json").write_text(
            json.dumps({**asdict(self.report), "ok": self.report.ok}, indent=2)
        )
        for line in self.report.lines():
            print(line, flush=True)
        return self.report

    def _soak(
        self,
        target: LoadTarget,
        pipeline: _Pipeline,
        bigtable: FaultProxy,
        pubsub: PubSubFaultProxy,
    ) -> None:
        ledger_path = self.work_dir / "ledger.sqlite"
        ledger_path.unlink(missing_ok=True)
        seconds = self.minutes * 60
        published: list[PublishStats] = []
        with Ledger(ledger_path) as ledger:
            progress = Progress(self.rate, None, seconds)
            generator = TrafficGenerator(traffic(self.seed))

            def publish() -> None:
                publisher = Publisher(target.topic, ledger, self.rate)
                published.append(publisher.run(iter(generator), progress, duration=seconds))

            publisher = threading.Thread(target=publish, name="chaos-publisher")
            self._started = time.monotonic()
            publisher.start()
            self._follow(pipeline, bigtable, pubsub, publisher)
            bigtable.reset()
            pubsub.reset()
            self.note("traffic ended; faults cleared; verifying")
            if not pipeline.process.alive():
                pipeline.restart()
                self.note("launcher started again")
            self.report.sent = published[0].sent if published else 0
            verdict = verify(ledger, target.targets, timeout=300, progress=False)
            self.report.verify, self.report.verify_ok = verdict.line(), verdict.ok
            self.report.rollups = self._rollups(ledger_path, ledger, target, verdict)

    def _follow(
        self,
        pipeline: _Pipeline,
        bigtable: FaultProxy,
        pubsub: PubSubFaultProxy,
        publisher: threading.Thread,
    ) -> None:
        """Run the schedule while traffic flows; restart what dies; note the job's restarts."""
        pending = list(self.plan)
        ending: list[tuple[float, Action]] = []
        job_restarts = 0
        last_sample = 0.0
        while publisher.is_alive() or pending or ending:
            now = time.monotonic() - self._started
            for end, action in [e for e in ending if e[0] <= now]:
                (bigtable if action.target == "bigtable" else pubsub).reset()
                ending.remove((end, action))
                self.note(f"{action.name} over")
            while pending and pending[0].at <= now:
                action = pending.pop(0)
                self._start_action(action, pipeline, bigtable, pubsub)
                if action.target != "process":
                    ending.append((action.at + action.seconds, action))
            if not pipeline.process.alive():
                code = pipeline.process.process.returncode
                self.crashes.append(time.time())
                pipeline.restart()
                self.note(f"the launcher had exited ({code}); started again")
            seen = pipeline.job_restarts()
            if seen > job_restarts:
                job_restarts = seen
                self.crashes.append(time.time())
                self.note("the launcher restarted the job")
            if now - last_sample >= 2.0:
                pipeline.sample()
                last_sample = now
            time.sleep(TICK)

    def _start_action(
        self,
        action: Action,
        pipeline: _Pipeline,
        bigtable: FaultProxy,
        pubsub: PubSubFaultProxy,
    ) -> None:
        if action.target == "bigtable":
            actions.on_bigtable(action, bigtable)
        elif action.target == "pubsub":
            actions.on_pubsub(action, pubsub)
        elif action.name == "kill_launcher":
            self.crashes.append(time.time())
            pipeline.process.kill()
            pipeline.restart()
            self.note("kill_launcher: SIGKILL of the launcher and its children; started again")
            return
        else:
            which = actions.is_prism if action.name == "kill_prism" else actions.is_rollup_worker
            pid = actions.kill_child(pipeline.process.process.pid, which)
            if pid is not None:
                self.crashes.append(time.time())
            self.note(f"{action.name}: SIGKILL of pid {pid}" if pid else f"{action.name}: none")
            return
        self.note(f"{action.name} for {action.seconds:.0f}s")

    def _rollups(
        self, ledger_path: Path, ledger: Ledger, target: LoadTarget, verdict: Verdict
    ) -> dict[str, Any]:
        """Every window against the ledger's oracle: exact, touched by a crash, or wrong."""
        too_late = {
            seq
            for letter in ledger.dead_letters()
            if letter.kind == "too_late" and (seq := ledger.seq_of(letter.loadgen_id)) is not None
        }
        expected = expected_rollups(ledger_path, WINDOW_SECONDS * 1000, excluded=too_late)
        # Windows fire once the watermark passes them: idle now, it moves to the wall clock.
        deadline = time.monotonic() + WINDOW_SECONDS + 60
        while True:
            stored = stored_rollups(PROJECT, target.instance, target.tables["rollup"])
            problems = {
                key: window_problems(expected.get(key), stored.get(key))
                for key in expected.keys() | stored.keys()
            }
            wrong = {key: found for key, found in problems.items() if found}
            if not any(not self._touched(key) for key in wrong) or time.monotonic() > deadline:
                break
            time.sleep(5)
        touched = {key for key in problems if self._touched(key)}
        unexplained = sorted(
            f"{key} {'; '.join(wrong[key])}" for key in wrong if key not in touched
        )
        return {
            "windows": len(problems),
            "exact": len(problems) - len(wrong),
            "touched": len(touched),
            "touched_inexact": len(touched & wrong.keys()),
            "unexplained": unexplained,
            "too_late_excluded": len(too_late),
        }

    def _touched(self, key: str) -> bool:
        """Whether a crash fell while the window `key` (`<key>#<start>`) was still open."""
        start = calendar.timegm(time.strptime(key.rsplit("#", 1)[1][:19], "%Y-%m-%dT%H:%M:%S"))
        return any(start <= crash <= start + TOUCHED_AFTER_SECONDS for crash in self.crashes)
