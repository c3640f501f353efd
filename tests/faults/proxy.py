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
import enum
import functools
import hashlib
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, NoReturn

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

MUTATE_ROWS = "/google.bigtable.v2.Bigtable/MutateRows"
DEFAULT_REJECT_MESSAGE = "row rejected by FaultProxy (permanent)"

# Raw protobuf classes: the proxy edits requests/responses field by field, without proto-plus.
_MutateRowsRequestPb: Any = MutateRowsRequest.pb()
_MutateRowsResponsePb: Any = MutateRowsResponse.pb()

# No limit: the proxy must not refuse what the emulator accepts (it has no 100k-mutation limit).
_UNLIMITED_MESSAGES = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
# A deadline further away than this is "no deadline" (gRPC reports infinity as a huge number).
_NO_DEADLINE_SECONDS = 10**6
# Header names gRPC manages itself; passing them on as metadata is refused or meaningless.
_RESERVED_METADATA = frozenset({"user-agent", "te", "content-type", "host"})
_STATUS_DETAILS = "grpc-status-details-bin"

Metadata = tuple[tuple[str, str | bytes], ...]


class ProxyBindError(RuntimeError):
    """The proxy's listening address is taken or invalid."""


class Shape(enum.Enum):
    """The streaming shape of an RPC method (request side, response side)."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


class _ShapeRecorder(grpc.Channel):
    """A channel that builds no calls, only records which multicallable each method asks for."""

    def __init__(self) -> None:
        self.shapes: dict[str, Shape] = {}

    def _record(self, shape: Shape, method: str) -> Callable[..., None]:
        self.shapes[method] = shape
        return _never_called

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., None]:
        return self._record(Shape.UNARY_UNARY, method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., None]:
        return self._record(Shape.UNARY_STREAM, method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., None]:
        return self._record(Shape.STREAM_UNARY, method)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., None]:
        return self._record(Shape.STREAM_STREAM, method)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        return None

    def unsubscribe(self, callback: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _never_called(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("shape recorder stubs are never invoked")


_TRANSPORTS: tuple[Any, ...] = (
    BigtableGrpcTransport,
    BigtableTableAdminGrpcTransport,
    BigtableInstanceAdminGrpcTransport,
)


@functools.cache
def method_shapes() -> Mapping[str, Shape]:
    """Full method path -> Shape for every RPC the installed Bigtable clients can call.

    The installed packages are proto-plus based and register no *service* descriptors in the
    protobuf pool, so the shapes are read from the generated gRPC transports instead: each
    transport is built on a recording channel and every stub property is touched once, which
    makes it ask for `unary_unary`/`unary_stream`/... with the method's path. That covers
    google.bigtable.v2.Bigtable, both admin services and google.longrunning.Operations (the
    admin transports' operations client), and follows the installed versions automatically.
    """
    shapes: dict[str, Shape] = {}
    for transport_class in _TRANSPORTS:
        recorder = _ShapeRecorder()
        transport = transport_class(channel=recorder)
        # Stubs are built lazily from `_logged_channel` (the channel wrapped in a logging
        # interceptor, which defers unary-unary stub creation); point it at the recorder.
        transport._logged_channel = recorder
        transport._stubs.clear()
        for name in dir(transport_class):
            if isinstance(getattr(transport_class, name, None), property):
                getattr(transport, name)
        shapes.update(recorder.shapes)
    return shapes


def draw(seed: int, *parts: object) -> float:
    """The deterministic number in [0, 1) behind every ratio rule: a hash of seed and parts.

    A rule with ratio r picks an item when draw(seed, ...) < r. Tests can compute the same
    expectation; it does not depend on timing or thread interleaving.
    """
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    return ratio


def _check_error(code: grpc.StatusCode) -> grpc.StatusCode:
    if code == grpc.StatusCode.OK:
        raise ValueError("an injected failure needs a non-OK status code")
    return code


@dataclass
class _RatioRule:
    """A seeded ratio rule; `seen` numbers the calls it has been asked about."""

    ratio: float
    seed: int
    seen: int = 0

    def next_call(self) -> int:
        call, self.seen = self.seen, self.seen + 1
        return call


@dataclass
class _Rules:
    fail_first: int = 0
    fail_calls: _RatioRule | None = None
    fail_calls_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_entries: _RatioRule | None = None
    fail_entries_codes: tuple[grpc.StatusCode, ...] = ()
    delay_seconds: float = 0.0
    delay: _RatioRule | None = None
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


def _forwardable(metadata: Iterable[tuple[str, str | bytes]] | None, trailing: bool) -> Metadata:
    """Metadata the proxy may pass on: without pseudo-headers and gRPC's own headers."""
    kept: list[tuple[str, str | bytes]] = []
    for key, value in metadata or ():
        name = key.lower()
        if name.startswith(":") or name in _RESERVED_METADATA:
            continue
        if name.startswith("grpc-") and not (trailing and name == _STATUS_DETAILS):
            continue
        kept.append((key, value))
    return tuple(kept)


def _code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


class FaultProxy:
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
        self.upstream = upstream
        self._host = host
        self._port = port
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._rules = _Rules()
        self._counters = _Counters()
        self._requests: deque[tuple[tuple[bytes, int], ...]] = deque(maxlen=history)
        self._injected: deque[tuple[bytes, grpc.StatusCode]] = deque(maxlen=history)
        self._methods: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: Any = None
        self._channel: Any = None
        self._bound_port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` the proxy listens on (the value for BIGTABLE_EMULATOR_HOST)."""
        if self._bound_port is None:
            raise RuntimeError("FaultProxy is not started")
        return f"{self._host}:{self._bound_port}"

    def start(self) -> FaultProxy:
        """Bind the port and start serving; returns self."""
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._stopping.clear()
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="fault-proxy"),
            handlers=[_Handler(self)],
            # No port sharing: a second proxy on a fixed port must fail, not split traffic.
            options=[*_UNLIMITED_MESSAGES, ("grpc.so_reuseport", 0)],
        )
        where = f"{self._host}:{self._port}"
        try:
            port = server.add_insecure_port(where)
        except RuntimeError as err:  # grpcio raises on bind failure (older versions return 0)
            raise ProxyBindError(f"FaultProxy could not bind {where}") from err
        if port == 0:
            raise ProxyBindError(f"FaultProxy could not bind {where}")
        self._channel = grpc.insecure_channel(self.upstream, options=_UNLIMITED_MESSAGES)
        server.start()
        self._server, self._bound_port = server, port
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight RPCs get `grace` seconds) and close the upstream channel."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes delayed calls
        server.stop(grace).wait()
        self._channel.close()

    def __enter__(self) -> FaultProxy:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules (each call replaces the previous rule of its kind) --------------------------

    def fail_calls(
        self, ratio: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, seed: int = 0
    ) -> None:
        """Fail a seeded fraction of MutateRows calls with `code` before forwarding anything.

        Call k (counted from now) fails when draw(seed, "call", k) < ratio.
        """
        rule = _RatioRule(_check_ratio(ratio), seed)
        with self._lock:
            self._rules.fail_calls, self._rules.fail_calls_code = rule, _check_error(code)

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
        rule = _RatioRule(_check_ratio(ratio), seed)
        checked = tuple(_check_error(code) for code in codes)
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
        rule = _RatioRule(_check_ratio(ratio), seed)
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
            self._rules.outage_code = _check_error(code)
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
            self._rules.reject_code, self._rules.reject_message = _check_error(code), message

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

    def _count_method(self, method: str) -> None:
        with self._lock:
            self._methods[method] += 1

    def _upstream_kwargs(self, context: grpc.ServicerContext) -> dict[str, Any]:
        remaining = context.time_remaining()
        return {
            "metadata": _forwardable(context.invocation_metadata(), trailing=False),
            "timeout": None if remaining is None or remaining > _NO_DEADLINE_SECONDS else remaining,
        }

    def _forward_unary_unary(
        self, method: str, request: bytes, context: grpc.ServicerContext
    ) -> bytes:
        call = self._channel.unary_unary(method).future(request, **self._upstream_kwargs(context))
        return _await_unary(call, context)

    def _forward_unary_stream(
        self, method: str, request: bytes, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call = self._channel.unary_stream(method)(request, **self._upstream_kwargs(context))
        yield from _relay_stream(call, context)

    def _forward_stream_unary(
        self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> bytes:
        call = self._channel.stream_unary(method).future(requests, **self._upstream_kwargs(context))
        return _await_unary(call, context)

    def _forward_stream_stream(
        self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call = self._channel.stream_stream(method)(requests, **self._upstream_kwargs(context))
        yield from _relay_stream(call, context)

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
        for raw in _relay_stream(upstream, context, send_initial_metadata=not plan.injected):
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

    def _hold(self, seconds: float, context: grpc.ServicerContext) -> None:
        """Sleep `seconds`, or less if the client goes away or the proxy stops."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and context.is_active():
            if self._stopping.wait(min(left, 0.02)):
                return


def _entries_response(injected: Iterable[tuple[int, grpc.StatusCode, str]]) -> bytes:
    response = _MutateRowsResponsePb()
    for index, code, message in injected:
        response.entries.add(
            index=index, status=status_pb2.Status(code=_code_number(code), message=message)
        )
    return bytes(response.SerializeToString())


def _abort(context: grpc.ServicerContext, err: grpc.RpcError) -> NoReturn:
    """End the RPC with the upstream's status, details and trailing metadata."""
    context.set_trailing_metadata(_forwardable(err.trailing_metadata(), trailing=True))
    context.abort(err.code(), err.details() or "")
    raise AssertionError("unreachable: context.abort raises")


def _await_unary(call: Any, context: grpc.ServicerContext) -> bytes:
    """The upstream's single response, with its metadata; its error status if it failed."""
    context.add_callback(call.cancel)  # the client left: stop the upstream call too
    try:
        response = call.result()
    except grpc.RpcError as err:
        _abort(context, err)
    except grpc.FutureCancelledError:
        context.abort(grpc.StatusCode.CANCELLED, "cancelled by the client")
        raise AssertionError("unreachable: context.abort raises") from None
    initial = _forwardable(call.initial_metadata(), trailing=False)
    if initial:
        context.send_initial_metadata(initial)
    context.set_trailing_metadata(_forwardable(call.trailing_metadata(), trailing=True))
    return bytes(response)


def _relay_stream(
    call: Any, context: grpc.ServicerContext, send_initial_metadata: bool = True
) -> Iterator[bytes]:
    """Yield an upstream response stream; cancel it if the client leaves; pass its status.

    `send_initial_metadata` is False when the proxy already sent a response of its own (gRPC
    allows initial metadata only before the first message).
    """
    context.add_callback(call.cancel)
    try:
        initial = _forwardable(call.initial_metadata(), trailing=False)
        if initial and send_initial_metadata:
            context.send_initial_metadata(initial)
        yield from call
    except grpc.RpcError as err:
        _abort(context, err)
    context.set_trailing_metadata(_forwardable(call.trailing_metadata(), trailing=True))


class _Handler(grpc.GenericRpcHandler):
    """Routes every method: MutateRows to the fault logic, the rest straight upstream."""

    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy
        self._shapes = method_shapes()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        proxy = self._proxy
        proxy._count_method(method)
        if method == MUTATE_ROWS:
            return grpc.unary_stream_rpc_method_handler(proxy._mutate_rows)
        # Unknown methods are relayed as bidirectional streams: on the wire every gRPC call is
        # a stream, so this carries any shape unchanged.
        shape = self._shapes.get(method, Shape.STREAM_STREAM)
        if shape is Shape.UNARY_UNARY:
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(proxy._forward_unary_unary, method)
            )
        if shape is Shape.UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(proxy._forward_unary_stream, method)
            )
        if shape is Shape.STREAM_UNARY:
            return grpc.stream_unary_rpc_method_handler(
                functools.partial(proxy._forward_stream_unary, method)
            )
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(proxy._forward_stream_stream, method)
        )


# -- CLI ---------------------------------------------------------------------------------------

_CODES = {code.name: code for code in grpc.StatusCode if code != grpc.StatusCode.OK}


def _code(name: str) -> grpc.StatusCode:
    try:
        return _CODES[name.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown status code {name!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.proxy",
        description="Fault-injecting gRPC proxy in front of the Bigtable emulator "
        "(point BIGTABLE_EMULATOR_HOST at --host:--port).",
    )
    parser.add_argument("--upstream", required=True, help="emulator host:port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every ratio rule")
    parser.add_argument(
        "--fail-calls", type=float, default=0.0, metavar="RATIO", help="fail whole calls"
    )
    parser.add_argument(
        "--fail-calls-code", type=_code, default=grpc.StatusCode.UNAVAILABLE, metavar="CODE"
    )
    parser.add_argument(
        "--fail-entries", type=float, default=0.0, metavar="RATIO", help="fail single entries"
    )
    parser.add_argument(
        "--fail-entries-code",
        type=_code,
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
    parser.add_argument("--stats-every", type=float, default=5.0, metavar="SECONDS")
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
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        proxy = FaultProxy(args.upstream, host=args.host, port=args.port).start()
    except ProxyBindError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with proxy:
        configure(proxy, args)
        print(f"fault proxy {proxy.address} -> {args.upstream}", flush=True)
        try:
            while not done.wait(args.stats_every):
                print(proxy.stats().line(), flush=True)
        except KeyboardInterrupt:
            pass
        print(f"final: {proxy.stats().line()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
