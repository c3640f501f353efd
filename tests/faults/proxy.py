"""A gRPC proxy in front of the Bigtable emulator that injects MutateRows faults on command.

The emulator never fails transiently, so tests (and manual chaos runs) put this proxy between the
clients and the emulator. Every RPC of the data API, the admin APIs and long-running operations is
forwarded unchanged (raw bytes, invocation metadata, deadline, upstream status and metadata).
Only google.bigtable.v2.Bigtable/MutateRows is inspected: rules set on the proxy object fail whole
calls, fail or reject individual entries (without applying them upstream), delay calls, or make
Bigtable unreachable for a while (an outage: every call fails until it ends).

    with FaultProxy(emulator.address) as proxy:
        proxy.fail_entries(0.3, codes=(grpc.StatusCode.INTERNAL,))
        ...  # clients with BIGTABLE_EMULATOR_HOST=proxy.address
        assert proxy.stats().entries_failed > 0

CLI for manual runs (until Ctrl-C, a stats line every few seconds):

    python -m tests.faults.proxy --upstream 127.0.0.1:8086 --port 8096 \
        --fail-calls 0.1 --fail-entries 0.05 --fail-entries-code RESOURCE_EXHAUSTED \
        --reject-key KEY --outage 120
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.bigtable_admin_v2.services.bigtable_instance_admin.transports.grpc import (
    BigtableInstanceAdminGrpcTransport,
)
from google.cloud.bigtable_admin_v2.services.bigtable_table_admin.transports.grpc import (
    BigtableTableAdminGrpcTransport,
)
from google.cloud.bigtable_v2.services.bigtable.transports.grpc import BigtableGrpcTransport
from google.cloud.bigtable_v2.types import MutateRowsRequest, MutateRowsResponse
from google.rpc import status_pb2

from tests.faults.relay import (
    ProxyBindError,
    RatioRule,
    Relay,
    Shape,
    check_error,
    check_ratio,
    code_named,
    code_number,
    draw,
    proxy_parser,
    relay_stream,
    serve,
    shapes_of,
)

__all__ = ["MUTATE_ROWS", "FaultProxy", "ProxyBindError", "ProxyStats", "Shape", "draw"]

MUTATE_ROWS = "/google.bigtable.v2.Bigtable/MutateRows"
DEFAULT_REJECT_MESSAGE = "row rejected by FaultProxy (permanent)"

# Raw protobuf classes: the proxy edits requests/responses field by field, without proto-plus.
_MutateRowsRequestPb: Any = MutateRowsRequest.pb()
_MutateRowsResponsePb: Any = MutateRowsResponse.pb()


_TRANSPORTS: tuple[Any, ...] = (
    BigtableGrpcTransport,
    BigtableTableAdminGrpcTransport,
    BigtableInstanceAdminGrpcTransport,
)


@functools.cache
def method_shapes() -> Mapping[str, Shape]:
    """Full method path -> Shape for every RPC the installed Bigtable clients can call.

    google.bigtable.v2.Bigtable, both admin services and google.longrunning.Operations (the
    admin transports' operations client), read from the generated transports (relay.shapes_of).
    """
    return shapes_of(_TRANSPORTS)


@dataclass
class _Rules:
    fail_first: int = 0
    fail_calls: RatioRule | None = None
    fail_calls_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_entries: RatioRule | None = None
    fail_entries_codes: tuple[grpc.StatusCode, ...] = ()
    delay_seconds: float = 0.0
    delay: RatioRule | None = None
    rejected: frozenset[bytes] = frozenset()
    reject_code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    reject_message: str = DEFAULT_REJECT_MESSAGE
    outage_until: float = 0.0  # time.monotonic(); calls before it fail as a whole
    outage_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class ProxyStats:
    """A consistent snapshot of what the proxy saw and did (MutateRows unless noted).

    Attributes:
        calls: MutateRows calls received.
        entries_seen: entries in those calls.
        calls_failed: calls failed as a whole (fail_calls, fail_first_attempts); none applied.
        calls_delayed: calls held back by delay_calls.
        entries_failed: entries answered with an injected transient code (fail_entries).
        entries_rejected: entries answered with the permanent reject code (reject_keys).
        entries_forwarded: entries sent to the upstream emulator.
        empty_mutation_entries: entries seen whose mutation list was empty.
        outage_calls: calls failed by an outage (also counted in calls_failed).
        outage_ended: wall-clock time (time.time()) the last outage ended or will end.
        resumed: wall-clock time of the first call forwarded upstream after that outage ended
            (None while none was): `resumed - outage_ended` is how long writes took to resume.
        requests: the last N MutateRows requests, each as ((row_key, mutation_count), ...).
        injected: the last N entries failed or rejected, as (row_key, code).
        methods: every RPC received (all services), by full method path.
    """

    calls: int = 0
    entries_seen: int = 0
    calls_failed: int = 0
    calls_delayed: int = 0
    entries_failed: int = 0
    entries_rejected: int = 0
    entries_forwarded: int = 0
    empty_mutation_entries: int = 0
    outage_calls: int = 0
    outage_ended: float | None = None
    resumed: float | None = None
    requests: tuple[tuple[tuple[bytes, int], ...], ...] = ()
    injected: tuple[tuple[bytes, grpc.StatusCode], ...] = ()
    methods: Mapping[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """One human-readable line (the CLI prints it periodically)."""
        return (
            f"calls={self.calls} failed={self.calls_failed} delayed={self.calls_delayed} "
            f"entries={self.entries_seen} forwarded={self.entries_forwarded} "
            f"entry_failures={self.entries_failed} rejected={self.entries_rejected} "
            f"empty={self.empty_mutation_entries} outage_calls={self.outage_calls}"
        )


@dataclass
class _Counters:
    calls: int = 0
    entries_seen: int = 0
    calls_failed: int = 0
    calls_delayed: int = 0
    entries_failed: int = 0
    entries_rejected: int = 0
    entries_forwarded: int = 0
    empty_mutation_entries: int = 0
    outage_calls: int = 0
    outage_ended: float | None = None
    resumed: float | None = None


@dataclass(frozen=True)
class _Plan:
    """What to do with one MutateRows call, decided atomically under the proxy's lock."""

    delay: float
    fail_code: grpc.StatusCode | None
    injected: tuple[tuple[int, grpc.StatusCode, str], ...]  # (original index, code, message)
    forward: tuple[int, ...]  # original indexes sent upstream, in order


class FaultProxy(Relay):
    """Forwards every RPC to `upstream` (host:port); injects MutateRows faults on command.

    Thread-safe: rules may be changed and stats read while RPCs are in flight. A context
    manager: entering starts the server, leaving stops it.

    Args:
        upstream: the emulator's address, `host:port`.
        host: interface to listen on.
        port: port to listen on; 0 picks a free one (see `address`).
        max_workers: concurrent RPCs (delayed calls and open streams each hold one).
        history: how many requests / injected entries `stats()` keeps.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 64,
        history: int = 100,
    ) -> None:
        super().__init__(upstream, method_shapes(), host=host, port=port, max_workers=max_workers)
        self._rules = _Rules()
        self._counters = _Counters()
        self._requests: deque[tuple[tuple[bytes, int], ...]] = deque(maxlen=history)
        self._injected: deque[tuple[bytes, grpc.StatusCode]] = deque(maxlen=history)

    def start(self) -> FaultProxy:
        """Bind the port and start serving; returns self."""
        started: FaultProxy = super().start()
        return started

    def __enter__(self) -> FaultProxy:
        entered: FaultProxy = super().__enter__()
        return entered

    # -- rules (each call replaces the previous rule of its kind) --------------------------

    def fail_calls(
        self, ratio: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, seed: int = 0
    ) -> None:
        """Fail a seeded fraction of MutateRows calls with `code` before forwarding anything.

        Call k (counted from now) fails when draw(seed, "call", k) < ratio.
        """
        rule = RatioRule(check_ratio(ratio), seed)
        with self._lock:
            self._rules.fail_calls, self._rules.fail_calls_code = rule, check_error(code)

    def fail_entries(
        self,
        ratio: float,
        codes: Sequence[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL),
        seed: int = 0,
    ) -> None:
        """Fail a seeded fraction of entries: not forwarded, answered with one of `codes`.

        In the k-th call this rule sees (counted from now), entry i fails when
        draw(seed, "entry", k, i) < ratio, with codes[int(draw(seed, "code", k, i) * len(codes))].
        The other entries are forwarded; every status is reported at the client's index.
        """
        if not codes:
            raise ValueError("fail_entries needs at least one status code")
        rule = RatioRule(check_ratio(ratio), seed)
        checked = tuple(check_error(code) for code in codes)
        with self._lock:
            self._rules.fail_entries, self._rules.fail_entries_codes = rule, checked

    def fail_first_attempts(self, n: int) -> None:
        """Fail the next `n` MutateRows calls with UNAVAILABLE, then let calls pass."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            self._rules.fail_first = n

    def delay_calls(self, seconds: float, ratio: float = 1.0, seed: int = 0) -> None:
        """Hold a seeded fraction of MutateRows calls for `seconds` before handling them.

        A call whose client gave up meanwhile (deadline, cancel) is not forwarded at all.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        rule = RatioRule(check_ratio(ratio), seed)
        with self._lock:
            self._rules.delay, self._rules.delay_seconds = rule, seconds

    def outage(self, seconds: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> float:
        """Bigtable unreachable for `seconds` from now: every MutateRows call fails with `code`.

        Nothing is applied meanwhile. Returns the wall-clock time (time.time()) it ends;
        `stats().resumed` then tells when the first call got through again.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        ends = time.time() + seconds
        with self._lock:
            self._rules.outage_until = time.monotonic() + seconds
            self._rules.outage_code = check_error(code)
            self._counters.outage_ended, self._counters.resumed = ends, None
        return ends

    def reject_keys(
        self,
        keys: Iterable[bytes],
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        message: str = DEFAULT_REJECT_MESSAGE,
    ) -> None:
        """Never forward entries for these row keys; always answer them with `code`."""
        rejected = frozenset(bytes(key) for key in keys)
        with self._lock:
            self._rules.rejected = rejected
            self._rules.reject_code, self._rules.reject_message = check_error(code), message

    def reset(self) -> None:
        """Clear every rule: the proxy forwards everything unchanged again."""
        with self._lock:
            self._rules = _Rules()

    def reset_stats(self) -> None:
        """Zero the counters and forget the recorded requests."""
        with self._lock:
            self._counters = _Counters()
            self._requests.clear()
            self._injected.clear()
            self._methods.clear()

    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counters
            return ProxyStats(
                calls=c.calls,
                entries_seen=c.entries_seen,
                calls_failed=c.calls_failed,
                calls_delayed=c.calls_delayed,
                entries_failed=c.entries_failed,
                entries_rejected=c.entries_rejected,
                entries_forwarded=c.entries_forwarded,
                empty_mutation_entries=c.empty_mutation_entries,
                outage_calls=c.outage_calls,
                outage_ended=c.outage_ended,
                resumed=c.resumed,
                requests=tuple(self._requests),
                injected=tuple(self._injected),
                methods=dict(self._methods),
            )

    # -- serving ---------------------------------------------------------------------------

    def _intercept(self, method: str, shape: Shape) -> Any:
        if method == MUTATE_ROWS:
            return grpc.unary_stream_rpc_method_handler(self._mutate_rows)
        return None

    def _mutate_rows(self, request_bytes: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """MutateRows with the current rules applied; statuses at the client's indexes."""
        request = _MutateRowsRequestPb.FromString(request_bytes)
        plan = self._plan(request)
        if plan.delay:
            self._hold(plan.delay, context)
            if self._stopping.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "FaultProxy is stopping")
            if not context.is_active():
                return  # the client gave up (deadline, cancel): apply nothing
        if plan.fail_code is not None:
            context.abort(plan.fail_code, f"injected by FaultProxy: {plan.fail_code.name}")
        if plan.injected:
            yield _entries_response(plan.injected)
        if plan.injected and not plan.forward:
            return  # every entry answered here; a request without entries still goes upstream
        forwarded = _MutateRowsRequestPb()
        forwarded.CopyFrom(request)
        del forwarded.entries[:]
        forwarded.entries.extend(request.entries[i] for i in plan.forward)
        with self._lock:
            self._counters.entries_forwarded += len(plan.forward)
        upstream = self._channel.unary_stream(MUTATE_ROWS)(
            forwarded.SerializeToString(), **self._upstream_kwargs(context)
        )
        for raw in relay_stream(upstream, context, send_initial_metadata=not plan.injected):
            response = _MutateRowsResponsePb.FromString(raw)
            for entry in response.entries:
                entry.index = plan.forward[entry.index]
            yield response.SerializeToString()

    def _plan(self, request: Any) -> _Plan:
        entries = request.entries
        with self._lock:
            rules, c = self._rules, self._counters
            c.calls += 1
            c.entries_seen += len(entries)
            c.empty_mutation_entries += sum(1 for e in entries if not e.mutations)
            self._requests.append(tuple((bytes(e.row_key), len(e.mutations)) for e in entries))

            delay = 0.0
            if rules.delay is not None:
                k = rules.delay.next_call()
                if draw(rules.delay.seed, "delay", k) < rules.delay.ratio:
                    delay = rules.delay_seconds
                    c.calls_delayed += 1

            fail_code: grpc.StatusCode | None = None
            if time.monotonic() < rules.outage_until:
                fail_code = rules.outage_code
                c.outage_calls += 1
            elif rules.fail_first > 0:
                rules.fail_first -= 1
                fail_code = grpc.StatusCode.UNAVAILABLE
            elif rules.fail_calls is not None:
                k = rules.fail_calls.next_call()
                if draw(rules.fail_calls.seed, "call", k) < rules.fail_calls.ratio:
                    fail_code = rules.fail_calls_code
            if fail_code is not None:
                c.calls_failed += 1
                return _Plan(delay, fail_code, (), ())

            entry_call = rules.fail_entries.next_call() if rules.fail_entries else 0
            injected: list[tuple[int, grpc.StatusCode, str]] = []
            forward: list[int] = []
            for i, entry in enumerate(entries):
                key = bytes(entry.row_key)
                if key in rules.rejected:
                    injected.append((i, rules.reject_code, rules.reject_message))
                    self._injected.append((key, rules.reject_code))
                    c.entries_rejected += 1
                    continue
                rule = rules.fail_entries
                if rule is not None and draw(rule.seed, "entry", entry_call, i) < rule.ratio:
                    codes = rules.fail_entries_codes
                    code = codes[int(draw(rule.seed, "code", entry_call, i) * len(codes))]
                    injected.append((i, code, f"injected by FaultProxy: {code.name}"))
                    self._injected.append((key, code))
                    c.entries_failed += 1
                    continue
                forward.append(i)
            if forward and c.outage_ended is not None and c.resumed is None:
                c.resumed = time.time()
            return _Plan(delay, None, tuple(injected), tuple(forward))


def _entries_response(injected: Iterable[tuple[int, grpc.StatusCode, str]]) -> bytes:
    response = _MutateRowsResponsePb()
    for index, code, message in injected:
        response.entries.add(
            index=index, status=status_pb2.Status(code=code_number(code), message=message)
        )
    return bytes(response.SerializeToString())


# -- CLI ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = proxy_parser("python -m tests.faults.proxy", "Bigtable", "BIGTABLE_EMULATOR_HOST")
    parser.add_argument(
        "--fail-calls", type=float, default=0.0, metavar="RATIO", help="fail whole calls"
    )
    parser.add_argument(
        "--fail-calls-code", type=code_named, default=grpc.StatusCode.UNAVAILABLE, metavar="CODE"
    )
    parser.add_argument(
        "--fail-entries", type=float, default=0.0, metavar="RATIO", help="fail single entries"
    )
    parser.add_argument(
        "--fail-entries-code",
        type=code_named,
        action="append",
        metavar="CODE",
        help="repeatable, any gRPC status name (e.g. RESOURCE_EXHAUSTED); "
        "default UNAVAILABLE and INTERNAL",
    )
    parser.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="fail the first N calls"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="hold calls this long"
    )
    parser.add_argument("--delay-ratio", type=float, default=1.0, metavar="RATIO")
    parser.add_argument(
        "--outage",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="every MutateRows call fails with UNAVAILABLE for this long from the start",
    )
    parser.add_argument(
        "--reject-key",
        action="append",
        default=[],
        metavar="KEY",
        help="repeatable; entries for this row key always fail with INVALID_ARGUMENT",
    )
    return parser


def configure(proxy: FaultProxy, args: argparse.Namespace) -> None:
    """Apply the CLI's rules to a proxy."""
    if args.fail_calls:
        proxy.fail_calls(args.fail_calls, args.fail_calls_code, seed=args.seed)
    if args.fail_entries:
        codes = args.fail_entries_code or (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        proxy.fail_entries(args.fail_entries, codes, seed=args.seed)
    if args.fail_first:
        proxy.fail_first_attempts(args.fail_first)
    if args.delay:
        proxy.delay_calls(args.delay, args.delay_ratio, seed=args.seed)
    if args.reject_key:
        proxy.reject_keys(key.encode() for key in args.reject_key)
    if args.outage:
        proxy.outage(args.outage)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy until Ctrl-C or SIGTERM, printing a stats line every few seconds."""
    args = _parser().parse_args(argv)
    return serve(
        "fault proxy",
        lambda: FaultProxy(args.upstream, host=args.host, port=args.port).start(),
        lambda proxy: configure(proxy, args),
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
