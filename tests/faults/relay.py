"""A gRPC relay: forwards every RPC to an emulator unchanged, for proxies that inject faults.

`Relay` serves any method (raw bytes, invocation metadata, deadline, upstream status and
metadata) and lets a subclass take over chosen methods (`_intercept`). The Bigtable and
Pub/Sub fault proxies (proxy.py, pubsub_proxy.py) are built on it; `draw` is the seeded
number behind every ratio rule, so tests can compute the same expectation.
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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, NoReturn

import grpc

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
Handler = Any  # a grpc.RpcMethodHandler


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


def shapes_of(transports: Iterable[Any]) -> Mapping[str, Shape]:
    """Full method path -> Shape for every RPC of the given generated gRPC transports.

    The installed clients are proto-plus based and register no *service* descriptors in the
    protobuf pool, so the shapes are read from the transports instead: each is built on a
    recording channel and every stub property is touched once, which makes it ask for
    `unary_unary`/`unary_stream`/... with the method's path. It follows the installed versions.
    """
    shapes: dict[str, Shape] = {}
    for transport_class in transports:
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


def check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    return ratio


def check_error(code: grpc.StatusCode) -> grpc.StatusCode:
    if code == grpc.StatusCode.OK:
        raise ValueError("an injected failure needs a non-OK status code")
    return code


@dataclass
class RatioRule:
    """A seeded ratio rule; `seen` numbers the calls it has been asked about."""

    ratio: float
    seed: int
    seen: int = 0

    def next_call(self) -> int:
        call, self.seen = self.seen, self.seen + 1
        return call


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


def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


class Relay:
    """Forwards every RPC to `upstream` (host:port); a subclass may intercept methods.

    Thread-safe; a context manager (entering starts the server, leaving stops it).

    Args:
        upstream: the emulator's address, `host:port`.
        shapes: method path -> Shape of the services relayed (unknown ones: streams).
        host: interface to listen on.
        port: port to listen on; 0 picks a free one (see `address`).
        max_workers: concurrent RPCs (delayed calls and open streams each hold one).
    """

    def __init__(
        self,
        upstream: str,
        shapes: Mapping[str, Shape],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 64,
    ) -> None:
        self.upstream = upstream
        self._shapes = shapes
        self._host = host
        self._port = port
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._methods: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: Any = None
        self._channel: Any = None
        self._bound_port: int | None = None

    @property
    def address(self) -> str:
        """`host:port` the proxy listens on (the value for the client's *_EMULATOR_HOST)."""
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"{self._host}:{self._bound_port}"

    def start(self) -> Any:
        """Bind the port and start serving; returns self."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
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
            raise ProxyBindError(f"{type(self).__name__} could not bind {where}") from err
        if port == 0:
            raise ProxyBindError(f"{type(self).__name__} could not bind {where}")
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

    def __enter__(self) -> Any:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def methods(self) -> dict[str, int]:
        """Every RPC received so far, by full method path."""
        with self._lock:
            return dict(self._methods)

    # -- for subclasses ----------------------------------------------------------------------

    def _intercept(self, method: str, shape: Shape) -> Handler | None:
        """A handler of the subclass's own for `method`, or None to relay it unchanged."""
        return None

    def _hold(self, seconds: float, context: grpc.ServicerContext) -> None:
        """Sleep `seconds`, or less if the client goes away or the proxy stops."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and context.is_active():
            if self._stopping.wait(min(left, 0.02)):
                return

    # -- serving -----------------------------------------------------------------------------

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
        return await_unary(call, context)

    def _forward_unary_stream(
        self, method: str, request: bytes, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call = self._channel.unary_stream(method)(request, **self._upstream_kwargs(context))
        yield from relay_stream(call, context)

    def _forward_stream_unary(
        self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> bytes:
        call = self._channel.stream_unary(method).future(requests, **self._upstream_kwargs(context))
        return await_unary(call, context)

    def _forward_stream_stream(
        self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call = self._channel.stream_stream(method)(requests, **self._upstream_kwargs(context))
        yield from relay_stream(call, context)


def abort_with(context: grpc.ServicerContext, err: grpc.RpcError) -> NoReturn:
    """End the RPC with the upstream's status, details and trailing metadata."""
    context.set_trailing_metadata(_forwardable(err.trailing_metadata(), trailing=True))
    context.abort(err.code(), err.details() or "")
    raise AssertionError("unreachable: context.abort raises")


def await_unary(call: Any, context: grpc.ServicerContext) -> bytes:
    """The upstream's single response, with its metadata; its error status if it failed."""
    context.add_callback(call.cancel)  # the client left: stop the upstream call too
    try:
        response = call.result()
    except grpc.RpcError as err:
        abort_with(context, err)
    except grpc.FutureCancelledError:
        context.abort(grpc.StatusCode.CANCELLED, "cancelled by the client")
        raise AssertionError("unreachable: context.abort raises") from None
    initial = _forwardable(call.initial_metadata(), trailing=False)
    if initial:
        context.send_initial_metadata(initial)
    context.set_trailing_metadata(_forwardable(call.trailing_metadata(), trailing=True))
    return bytes(response)


def relay_stream(
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
        abort_with(context, err)
    context.set_trailing_metadata(_forwardable(call.trailing_metadata(), trailing=True))


class _Handler(grpc.GenericRpcHandler):
    """Routes every method: to the subclass if it intercepts it, else straight upstream."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        relay = self._relay
        relay._count_method(method)
        # Unknown methods are relayed as bidirectional streams: on the wire every gRPC call is
        # a stream, so this carries any shape unchanged.
        shape = relay._shapes.get(method, Shape.STREAM_STREAM)
        own = relay._intercept(method, shape)
        if own is not None:
            return own
        if shape is Shape.UNARY_UNARY:
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(relay._forward_unary_unary, method)
            )
        if shape is Shape.UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(relay._forward_unary_stream, method)
            )
        if shape is Shape.STREAM_UNARY:
            return grpc.stream_unary_rpc_method_handler(
                functools.partial(relay._forward_stream_unary, method)
            )
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(relay._forward_stream_stream, method)
        )


CODES = {code.name: code for code in grpc.StatusCode if code != grpc.StatusCode.OK}


def code_named(name: str) -> grpc.StatusCode:
    """The status code of a name such as RESOURCE_EXHAUSTED (any case), for CLIs."""
    try:
        return CODES[name.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown status code {name!r}") from None


def proxy_parser(prog: str, emulator: str, env_var: str) -> argparse.ArgumentParser:
    """The options every proxy CLI has: where it listens and forwards, the seed, stats."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Fault-injecting gRPC proxy in front of the {emulator} emulator "
        f"(point {env_var} at --host:--port).",
    )
    parser.add_argument("--upstream", required=True, help="emulator host:port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every ratio rule")
    parser.add_argument("--stats-every", type=float, default=5.0, metavar="SECONDS")
    return parser


def serve(
    label: str,
    start: Callable[[], Any],
    configure: Callable[[Any], None],
    args: argparse.Namespace,
) -> int:
    """Run the proxy `start()` returns until Ctrl-C or SIGTERM, a stats line every few seconds."""
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        proxy = start()
    except ProxyBindError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with proxy:
        configure(proxy)
        print(f"{label} {proxy.address} -> {args.upstream}", flush=True)
        try:
            while not done.wait(args.stats_every):
                print(proxy.stats().line(), flush=True)
        except KeyboardInterrupt:
            pass
        print(f"final: {proxy.stats().line()}", flush=True)
    return 0
