"""Server interceptors: exception -> status mapping, bearer-token auth, rate and concurrency limits.

Each interceptor wraps the behaviour of the handler it is given (all four call
shapes), so it sees the request context. :class:`_WrappingInterceptor` does the wrapping
once; each interceptor adds hooks: ``admit`` to refuse a call before it runs (auth,
limits), ``item`` to refuse a received message (undecodable; each item of a request
stream costs a rate-limit token) or ``failed`` to handle the exception a call raised
(errors). Order in ``build_server``: errors (outermost) -> auth -> concurrency -> rate
limit, so auth and limit failures are raised as exceptions and mapped to statuses in
one place (:func:`photoveil.server.status.status_for`).
"""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterable

import grpc

from photoveil.errors import InvalidInput
from photoveil.server.status import Overloaded, RateLimited, Unauthenticated, status_for

# Health and reflection stay open: load balancers probe health without credentials and
# the schema reflection reveals is public (the .proto files ship with the app).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


def bearer_token(context: grpc.ServicerContext) -> str | None:
    """The token of ``authorization: Bearer <token>`` (scheme in any case, spaces trimmed), else None."""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = value.strip().partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def peer_host(context: grpc.ServicerContext) -> str:
    """``ipv4:127.0.0.1:51234`` -> ``ipv4:127.0.0.1``: one identity per host, not per connection."""
    return context.peer().rsplit(":", 1)[0]


class _Undecodable:
    """What the error interceptor's deserializer returns for bytes that are not the request message."""

    def __init__(self, error: Exception):
        self.error = error


def _safe(deserializer):
    """Wrap a request deserializer so an undecodable message reaches the handler chain as
    :class:`_Undecodable` (-> INVALID_ARGUMENT) instead of gRPC's INTERNAL."""
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
            return _Undecodable(exc)

    return deserialize


class _WrappingInterceptor(grpc.ServerInterceptor):
    """Runs every handler's behaviour between :meth:`admit` and, on an exception, :meth:`failed`;
    every received request message (one, or each of a stream) passes :meth:`item` first."""

    wraps_open = True      # False: health and reflection calls pass unwrapped
    guards_decoding = False  # True (outermost only): undecodable messages become _Undecodable

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or not self.wraps_open and _is_open(details.method):
            return handler
        if handler.unary_unary:
            fn, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream:
            fn, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary:
            fn, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        else:
            fn, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        run = self._stream if handler.response_streaming else self._unary
        streaming_in, method = bool(handler.request_streaming), details.method

        def behaviour(request, context):
            return run(fn, self._items(request, context) if streaming_in else request, context, method, streaming_in)

        deserializer = _safe(handler.request_deserializer) if self.guards_decoding else handler.request_deserializer
        return factory(behaviour, request_deserializer=deserializer, response_serializer=handler.response_serializer)

    def admit(self, context: grpc.ServicerContext) -> None:
        """Called before the behaviour; raise to refuse the call."""

    def item(self, request, context: grpc.ServicerContext, streamed: bool) -> None:
        """Called with each received request message (``streamed``: one of a request stream)
        before the handler sees it; raise to refuse it."""

    def failed(self, exc: Exception, context: grpc.ServicerContext, method: str) -> None:
        """Called with an exception from ``admit`` or the behaviour; returning re-raises it."""

    def _items(self, requests, context):
        for request in requests:
            self.item(request, context, True)
            yield request

    def _unary(self, fn, request, context, method, streaming_in):
        try:
            self.admit(context)
            if not streaming_in:
                self.item(request, context, False)
            return fn(request, context)
        except Exception as exc:  # noqa: BLE001 - failed() decides; re-raised unchanged by default
            self.failed(exc, context, method)
            raise

    def _stream(self, fn, request, context, method, streaming_in):
        # A generator: admit() runs when the first answer is asked for, as the handler itself would.
        try:
            self.admit(context)
            if not streaming_in:
                self.item(request, context, False)
            yield from fn(request, context)
        except Exception as exc:  # noqa: BLE001
            self.failed(exc, context, method)
            raise


class ErrorInterceptor(_WrappingInterceptor):
    """Turns every exception (also one raised while streaming answers) into a status, and
    an undecodable request message into INVALID_ARGUMENT."""

    guards_decoding = True

    def item(self, request, context, streamed):
        if isinstance(request, _Undecodable):
            raise InvalidInput(f"the request message does not decode as the method's protobuf type "
                               f"({type(request.error).__name__}); send a serialized message of that type")

    def failed(self, exc, context, method):
        if context.code() not in (None, grpc.StatusCode.OK):
            return  # the behaviour already set a status (context.abort): let its exception through
        code, message = status_for(exc, method)  # the one place that maps them all
        context.abort(code, message)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._stamp = float(burst), clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, n: float = 1.0) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= n:
                self._tokens -= n
                return True
            return False

    def level(self) -> float:
        """Tokens available now."""
        with self._lock:
            self._refill()
            return self._tokens


class Buckets:
    """One :class:`TokenBucket` per key, least recently seen forgotten beyond ``max_keys``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000):
        TokenBucket(rate, burst)  # validates
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return bucket


class AuthInterceptor(_WrappingInterceptor):
    """Requires ``authorization: Bearer <token>`` matching one of ``tokens`` (constant time).

    Failed attempts are counted per peer host (a token bucket of ``failures_per_s`` up to
    ``failure_burst``); once it is empty that host is refused with RESOURCE_EXHAUSTED
    before its token is looked at, so guessing runs at most at that rate.
    """

    wraps_open = False

    def __init__(self, tokens: Iterable[str], failures_per_s: float = 1.0, failure_burst: float = 20.0):
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens if t]
        if not self._digests:
            raise ValueError("AuthInterceptor needs at least one non-empty token")
        self._failures = Buckets(failures_per_s, failure_burst)

    def authenticated(self, context: grpc.ServicerContext) -> str:
        """The caller's token; raises Unauthenticated."""
        if not any(k == "authorization" for k, _ in context.invocation_metadata()):
            raise Unauthenticated("missing 'authorization' metadata; send 'authorization: Bearer <token>'")
        token = bearer_token(context)
        if token is None:
            raise Unauthenticated("the 'authorization' metadata must read 'Bearer <token>'")
        digest = hashlib.sha256(token.encode()).digest()
        # Compare against every token so the timing does not tell which one nearly matched.
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(digest, known)
        if not ok:
            raise Unauthenticated("the bearer token is not valid for this server")
        return token

    def admit(self, context):
        failures = self._failures[peer_host(context)]
        if failures.level() < 1:
            raise RateLimited(f"too many failed authentications from this address (over "
                              f"{self._failures.rate:g}/s, burst {self._failures.burst:g}); retry later")
        try:
            self.authenticated(context)
        except Unauthenticated:
            failures.take()
            raise


class RateLimitInterceptor(_WrappingInterceptor):
    """One token bucket per principal -> RESOURCE_EXHAUSTED; a call costs one token and each
    item of a request stream one more.

    The principal is the authenticated bearer token (normalised as auth reads it) when
    ``by_token``, i.e. auth is on and has already accepted it; otherwise the peer host, so
    headers a caller makes up cannot buy it fresh buckets.
    """

    wraps_open = False
    MAX_CALLERS = 10_000  # least recently seen callers are forgotten beyond this

    def __init__(self, rate: float, burst: float, by_token: bool = False):
        self._buckets = Buckets(rate, burst, self.MAX_CALLERS)
        self.rate, self.burst, self.by_token = rate, burst, by_token

    def caller(self, context: grpc.ServicerContext) -> str:
        token = bearer_token(context) if self.by_token else None
        if token is not None:
            return "token:" + hashlib.sha256(token.encode()).hexdigest()
        return "peer:" + peer_host(context)

    def check(self, context: grpc.ServicerContext) -> None:
        if not self._buckets[self.caller(context)].take():
            raise RateLimited(f"rate limit of {self.rate:g} requests/s (burst {self.burst:g}, each stream item "
                              "counts) exceeded; retry later with backoff")

    def admit(self, context):
        self.check(context)

    def item(self, request, context, streamed):
        if streamed:
            self.check(context)


class ConcurrencyInterceptor(_WrappingInterceptor):
    """At most ``limit`` calls at once (RESOURCE_EXHAUSTED beyond); health and reflection
    are not counted, so probes answer while the server is full. A slot is freed when its
    call ends, however it ends."""

    wraps_open = False

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def admit(self, context):
        if not self._slots.acquire(blocking=False):
            raise Overloaded(f"the server is at its limit of {self.limit} concurrent calls; retry later with backoff")
        released = threading.Event()

        def release():
            if not released.is_set():
                released.set()
                self._slots.release()

        if not context.add_callback(release):  # the call already ended
            release()
