"""A gRPC proxy in front of the Pub/Sub emulator that makes Pub/Sub misbehave on command.

The emulator never fails, loses an answer or delivers twice. Point a client's
PUBSUB_EMULATOR_HOST at this proxy and set rules per method (short names: Pull, Acknowledge,
ModifyAckDeadline, Publish, or any full path):

    with PubSubFaultProxy(emulator.address) as proxy:
        proxy.fail("Acknowledge", 0.3, codes=(grpc.StatusCode.UNAVAILABLE,))
        proxy.fail_next("Pull", 2, grpc.StatusCode.NOT_FOUND)  # the next two pulls
        proxy.lose_answers("Publish", 0.2)  # the emulator applied it; the client sees an error
        proxy.delay("Pull", 2.0, ratio=0.1)
        proxy.duplicate_deliveries(0.2)  # a pull also delivers a message delivered before
        ends = proxy.outage(30)  # every call fails for 30 s (time.time() it ends)
        assert proxy.stats().methods["Acknowledge"].failed > 0

Every ratio rule is deterministic: the k-th call of a method (counted from when its rule was
set) is picked when draw(seed, rule, method, k) < ratio (relay.draw).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.pubsub_v1 import PullResponse
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from tests.faults.relay import (
    RatioRule,
    Relay,
    Shape,
    await_unary,
    check_error,
    check_ratio,
    code_named,
    draw,
    proxy_parser,
    serve,
    shapes_of,
)

SUBSCRIBER = "/google.pubsub.v1.Subscriber/"
PUBLISHER = "/google.pubsub.v1.Publisher/"
PULL = f"{SUBSCRIBER}Pull"
ACKNOWLEDGE = f"{SUBSCRIBER}Acknowledge"
MODIFY_ACK_DEADLINE = f"{SUBSCRIBER}ModifyAckDeadline"
PUBLISH = f"{PUBLISHER}Publish"
# What the pipeline calls; the names a rule may use for them.
SHORT_NAMES = {
    "Pull": PULL,
    "Acknowledge": ACKNOWLEDGE,
    "ModifyAckDeadline": MODIFY_ACK_DEADLINE,
    "Publish": PUBLISH,
}
# The codes Pub/Sub really returns: transient (its clients retry them) and refused for good.
TRANSIENT_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
)
REFUSED_CODES = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
)
LOST_ANSWER = "injected by PubSubFaultProxy: the answer was lost (the call was applied)"
_PullResponsePb: Any = PullResponse.pb()
_TRANSPORTS = (PublisherGrpcTransport, SubscriberGrpcTransport)


@functools.cache
def method_shapes() -> dict[str, Shape]:
    """Full method path -> Shape for every RPC of the Pub/Sub publisher and subscriber."""
    return dict(shapes_of(_TRANSPORTS))


def full_name(method: str) -> str:
    """`Pull` -> `/google.pubsub.v1.Subscriber/Pull`; full paths are kept."""
    if method.startswith("/"):
        return method
    try:
        return SHORT_NAMES[method]
    except KeyError:
        known = ", ".join(SHORT_NAMES)
        raise ValueError(f"unknown method {method!r}: one of {known}, or a full path") from None


def short_name(method: str) -> str:
    """The last part of a method path: `/google.pubsub.v1.Subscriber/Pull` -> `Pull`."""
    return method.rsplit("/", 1)[-1]


@dataclass
class _MethodRules:
    fail_next: list[grpc.StatusCode] = field(default_factory=list)  # the next calls, in order
    fail: RatioRule | None = None
    fail_codes: tuple[grpc.StatusCode, ...] = ()
    delay: RatioRule | None = None
    delay_seconds: float = 0.0
    lose: RatioRule | None = None


@dataclass
class MethodStats:
    """What the proxy did with one method's calls."""

    calls: int = 0  # received
    failed: int = 0  # answered with an injected error, not forwarded (outages included)
    outage: int = 0  # of those, by an outage
    delayed: int = 0
    lost: int = 0  # forwarded and applied upstream, answered DEADLINE_EXCEEDED
    forwarded: int = 0
    duplicates: int = 0  # Pull: messages delivered again (an earlier delivery, its ack id)
    codes: dict[str, int] = field(default_factory=dict)  # injected code name -> calls


@dataclass(frozen=True)
class PubSubProxyStats:
    """A snapshot: per method (short name), and when Pub/Sub came back after an outage."""

    methods: dict[str, MethodStats]
    outage_ended: float | None  # time.time() the last outage ended or will end
    resumed: float | None  # time.time() of the first call forwarded after it ended

    def of(self, method: str) -> MethodStats:
        """The stats of one method (zeros if it was never called)."""
        return self.methods.get(short_name(full_name(method)), MethodStats())

    def line(self) -> str:
        """One human-readable line (the CLI prints it periodically)."""
        parts = []
        for name, m in sorted(self.methods.items()):
            parts.append(
                f"{name}: calls={m.calls} failed={m.failed} lost={m.lost} delayed={m.delayed}"
                + (f" duplicates={m.duplicates}" if m.duplicates else "")
            )
        return "; ".join(parts) or "no calls"


@dataclass(frozen=True)
class _Plan:
    delay: float
    fail: grpc.StatusCode | None
    lose: bool


class PubSubFaultProxy(Relay):
    """Forwards every Pub/Sub RPC to `upstream`; fails, delays, loses and duplicates on command.

    Rules hold until replaced or `reset()`; each call of `fail`, `delay`, `lose_answers` for a
    method replaces that method's rule of the kind.
    """

    def __init__(
        self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, max_workers: int = 64
    ) -> None:
        super().__init__(upstream, method_shapes(), host=host, port=port, max_workers=max_workers)
        self._rules: dict[str, _MethodRules] = {}
        self._stats: dict[str, MethodStats] = {}
        self._outage_until = 0.0  # time.monotonic()
        self._outage_code = grpc.StatusCode.UNAVAILABLE
        self._outage_ended: float | None = None
        self._resumed: float | None = None
        self._duplicate: RatioRule | None = None
        self._delivered: deque[bytes] = deque(maxlen=1000)  # ReceivedMessages, serialized

    def start(self) -> PubSubFaultProxy:
        """Bind the port and start serving; returns self."""
        started: PubSubFaultProxy = super().start()
        return started

    def __enter__(self) -> PubSubFaultProxy:
        entered: PubSubFaultProxy = super().__enter__()
        return entered

    # -- rules -------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        ratio: float,
        codes: Sequence[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
        seed: int = 0,
    ) -> None:
        """Answer a seeded fraction of `method`'s calls with one of `codes`; nothing applied."""
        if not codes:
            raise ValueError("fail needs at least one status code")
        checked = tuple(check_error(code) for code in codes)
        with self._lock:
            rules = self._rules.setdefault(full_name(method), _MethodRules())
            rules.fail, rules.fail_codes = RatioRule(check_ratio(ratio), seed), checked

    def fail_next(
        self, method: str, n: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ) -> None:
        """Answer the next `n` calls of `method` with `code` (nothing applied), then pass."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            rules = self._rules.setdefault(full_name(method), _MethodRules())
            rules.fail_next = [check_error(code)] * n

    def delay(self, method: str, seconds: float, ratio: float = 1.0, seed: int = 0) -> None:
        """Hold a seeded fraction of `method`'s calls for `seconds` (a client gone: dropped)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._lock:
            rules = self._rules.setdefault(full_name(method), _MethodRules())
            rules.delay, rules.delay_seconds = RatioRule(check_ratio(ratio), seed), seconds

    def lose_answers(self, method: str, ratio: float, seed: int = 0) -> None:
        """Forward a seeded fraction of `method`'s calls, then answer DEADLINE_EXCEEDED.

        The emulator applied the call (acked, extended, published, delivered); the client
        cannot tell, as when a network drops the answer.
        """
        with self._lock:
            rules = self._rules.setdefault(full_name(method), _MethodRules())
            rules.lose = RatioRule(check_ratio(ratio), seed)

    def duplicate_deliveries(self, ratio: float, seed: int = 0) -> None:
        """A seeded fraction of pulls also delivers a message an earlier pull delivered.

        The duplicate carries its earlier delivery's ack id, as a redelivery of a message
        still leased would reach another reader.
        """
        with self._lock:
            self._duplicate = RatioRule(check_ratio(ratio), seed)

    def outage(self, seconds: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> float:
        """Pub/Sub unreachable for `seconds`: every call fails with `code`, nothing applied.

        Returns the wall-clock time (time.time()) it ends; `stats().resumed` tells when the
        first call got through again.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        ends = time.time() + seconds
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_code = check_error(code)
            self._outage_ended, self._resumed = ends, None
        return ends

    def reset(self) -> None:
        """Clear every rule: the proxy forwards everything unchanged again."""
        with self._lock:
            self._rules = {}
            self._duplicate = None
            self._outage_until = 0.0

    def stats(self) -> PubSubProxyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            methods = {
                name: MethodStats(**{**vars(m), "codes": dict(m.codes)})
                for name, m in self._stats.items()
            }
            return PubSubProxyStats(methods, self._outage_ended, self._resumed)

    # -- serving -----------------------------------------------------------------------------

    def _intercept(self, method: str, shape: Shape) -> Any:
        if shape is not Shape.UNARY_UNARY:
            return None  # StreamingPull and admin streams: relayed unchanged
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._call, method))

    def _plan(self, method: str) -> _Plan:
        name = short_name(method)
        with self._lock:
            stats = self._stats.setdefault(name, MethodStats())
            stats.calls += 1
            rules = self._rules.get(method, _MethodRules())
            delay = 0.0
            if rules.delay is not None:
                k = rules.delay.next_call()
                if draw(rules.delay.seed, "delay", method, k) < rules.delay.ratio:
                    delay = rules.delay_seconds
                    stats.delayed += 1
            fail: grpc.StatusCode | None = None
            if time.monotonic() < self._outage_until:
                fail = self._outage_code
                stats.outage += 1
            elif rules.fail_next:
                fail = rules.fail_next.pop(0)
            elif rules.fail is not None:
                k = rules.fail.next_call()
                if draw(rules.fail.seed, "fail", method, k) < rules.fail.ratio:
                    codes = rules.fail_codes
                    fail = codes[int(draw(rules.fail.seed, "code", method, k) * len(codes))]
            if fail is not None:
                stats.failed += 1
                stats.codes[fail.name] = stats.codes.get(fail.name, 0) + 1
                return _Plan(delay, fail, False)
            lose = False
            if rules.lose is not None:
                k = rules.lose.next_call()
                lose = draw(rules.lose.seed, "lose", method, k) < rules.lose.ratio
            return _Plan(delay, None, lose)

    def _forwarding(self, method: str) -> None:
        with self._lock:
            self._stats[short_name(method)].forwarded += 1
            if self._outage_ended is not None and self._resumed is None:
                self._resumed = time.time()

    def _call(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        plan = self._plan(method)
        if plan.delay:
            self._hold(plan.delay, context)
            if self._stopping.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "PubSubFaultProxy is stopping")
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "the client gave up")
        if plan.fail is not None:
            context.abort(plan.fail, f"injected by PubSubFaultProxy: {plan.fail.name}")
        self._forwarding(method)
        upstream = self._channel.unary_unary(method).future(
            request, **self._upstream_kwargs(context)
        )
        response = await_unary(upstream, context)
        if method == PULL:
            response = self._pulled(response)
        if plan.lose:
            with self._lock:
                self._stats[short_name(method)].lost += 1
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, LOST_ANSWER)
        return response

    def _pulled(self, response: bytes) -> bytes:
        """Remember what a pull delivered; maybe add one earlier delivery to it."""
        pulled = _PullResponsePb.FromString(response)
        delivered = [m.SerializeToString() for m in pulled.received_messages]
        with self._lock:
            extra = None
            rule = self._duplicate
            if rule is not None and self._delivered:
                k = rule.next_call()
                if draw(rule.seed, "duplicate", k) < rule.ratio:
                    pick = int(draw(rule.seed, "which", k) * len(self._delivered))
                    extra = self._delivered[pick]
                    self._stats[short_name(PULL)].duplicates += 1
            self._delivered.extend(delivered)
        if extra is None:
            return response
        pulled.received_messages.add().ParseFromString(extra)
        return bytes(pulled.SerializeToString())


# -- CLI (a manual chaos run) ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = proxy_parser("python -m tests.faults.pubsub_proxy", "Pub/Sub", "PUBSUB_EMULATOR_HOST")
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="METHOD=RATIO",
        help="repeatable, e.g. Acknowledge=0.1 (codes: --code)",
    )
    parser.add_argument("--code", type=code_named, action="append", metavar="CODE")
    parser.add_argument("--lose", action="append", default=[], metavar="METHOD=RATIO")
    parser.add_argument("--duplicate", type=float, default=0.0, metavar="RATIO")
    parser.add_argument("--outage", type=float, default=0.0, metavar="SECONDS")
    return parser


def _pairs(values: Iterable[str]) -> list[tuple[str, float]]:
    pairs = []
    for value in values:
        method, _, ratio = value.partition("=")
        pairs.append((method, float(ratio)))
    return pairs


def configure(proxy: PubSubFaultProxy, args: argparse.Namespace) -> None:
    """Apply the CLI's rules to a proxy."""
    codes = args.code or (grpc.StatusCode.UNAVAILABLE,)
    for method, ratio in _pairs(args.fail):
        proxy.fail(method, ratio, codes, seed=args.seed)
    for method, ratio in _pairs(args.lose):
        proxy.lose_answers(method, ratio, seed=args.seed)
    if args.duplicate:
        proxy.duplicate_deliveries(args.duplicate, seed=args.seed)
    if args.outage:
        proxy.outage(args.outage)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy until Ctrl-C or SIGTERM, printing a stats line every few seconds."""
    args = _parser().parse_args(argv)
    return serve(
        "pubsub fault proxy",
        lambda: PubSubFaultProxy(args.upstream, host=args.host, port=args.port).start(),
        lambda proxy: configure(proxy, args),
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
