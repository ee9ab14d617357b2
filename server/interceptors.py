"""Server interceptors: exception -> status mapping, bearer-token auth, rate limit.

Each interceptor wraps the behaviour of the handler it is given (all four call
shapes), so it sees the request context. :class:`_WrappingInterceptor` does the wrapping
once; each interceptor adds one hook: ``admit`` to refuse a call before it runs (auth,
rate limit) or ``failed`` to handle the exception a call raised (errors). Order in ``build_server``: errors (outermost)
-> auth -> rate limit, so auth and limit failures are raised as exceptions and mapped
to statuses in one place (:func:`photoveil.server.status.status_for`).
"""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterable

import grpc

from photoveil.server.status import RateLimited, Unauthenticated, status_for

# Health and reflection stay open: load balancers probe health without credentials and
# the schema reflection reveals is public (the .proto files ship with the app).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


Wrapper = Callable[[Callable, object, grpc.ServicerContext, str], object]


def _wrap(handler: grpc.RpcMethodHandler | None, wrapper: Wrapper, method: str):
    """A copy of ``handler`` whose behaviour runs through ``wrapper(behaviour, request, context, method)``."""
    if handler is None:
        return None
    if handler.unary_unary:
        fn, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream:
        fn, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary:
        fn, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    else:
        fn, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler

    def behaviour(request, context):
        return wrapper(fn, request, context, method)

    return factory(behaviour, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


class _WrappingInterceptor(grpc.ServerInterceptor):
    """Runs every handler's behaviour between :meth:`admit` and, on an exception, :meth:`failed`."""

    wraps_open = True  # False: health and reflection calls pass unwrapped

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if not self.wraps_open and _is_open(details.method):
            return handler
        streaming = handler is not None and bool(handler.response_streaming)
        return _wrap(handler, self._stream if streaming else self._unary, details.method)

    def admit(self, context: grpc.ServicerContext) -> None:
        """Called before the behaviour; raise to refuse the call."""

    def failed(self, exc: Exception, context: grpc.ServicerContext, method: str) -> None:
        """Called with an exception from ``admit`` or the behaviour; returning re-raises it."""

    def _unary(self, fn, request, context, method):
        try:
            self.admit(context)
            return fn(request, context)
        except Exception as exc:  # noqa: BLE001 - failed() decides; re-raised unchanged by default
            self.failed(exc, context, method)
            raise

    def _stream(self, fn, request, context, method):
        # A generator: admit() runs when the first answer is asked for, as the handler itself would.
        try:
            self.admit(context)
            yield from fn(request, context)
        except Exception as exc:  # noqa: BLE001
            self.failed(exc, context, method)
            raise


class ErrorInterceptor(_WrappingInterceptor):
    """Turns every exception (also one raised while streaming answers) into a status."""

    def failed(self, exc, context, method):
        if context.code() not in (None, grpc.StatusCode.OK):
            return  # the behaviour already set a status (context.abort): let its exception through
        code, message = status_for(exc, method)  # the one place that maps them all
        context.abort(code, message)


class AuthInterceptor(_WrappingInterceptor):
    """Requires ``authorization: Bearer <token>`` matching one of ``tokens`` (constant time)."""

    wraps_open = False

    def __init__(self, tokens: Iterable[str]):
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens if t]
        if not self._digests:
            raise ValueError("AuthInterceptor needs at least one non-empty token")

    def authenticated(self, context: grpc.ServicerContext) -> str:
        """The caller's token; raises Unauthenticated."""
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if not values:
            raise Unauthenticated("missing 'authorization' metadata; send 'authorization: Bearer <token>'")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the 'authorization' metadata must read 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        # Compare against every token so the timing does not tell which one nearly matched.
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(digest, known)
        if not ok:
            raise Unauthenticated("the bearer token is not valid for this server")
        return token.strip()

    def admit(self, context):
        self.authenticated(context)


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

    def take(self, n: float = 1.0) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= n:
                self._tokens -= n
                return True
            return False


class RateLimitInterceptor(_WrappingInterceptor):
    """One token bucket per caller (bearer token if any, else peer address) -> RESOURCE_EXHAUSTED."""

    wraps_open = False
    MAX_CALLERS = 10_000  # least recently seen callers are forgotten beyond this

    def __init__(self, rate: float, burst: float):
        TokenBucket(rate, burst)  # validates
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def caller(context: grpc.ServicerContext) -> str:
        for key, value in context.invocation_metadata():
            if key == "authorization":
                return "token:" + hashlib.sha256(value.encode()).hexdigest()
        peer = context.peer()  # e.g. ipv4:127.0.0.1:51234 -> one bucket per host
        return "peer:" + peer.rsplit(":", 1)[0]

    def _bucket(self, caller: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.pop(caller, None) or TokenBucket(self.rate, self.burst)
            self._buckets[caller] = bucket
            while len(self._buckets) > self.MAX_CALLERS:
                self._buckets.popitem(last=False)
            return bucket

    def check(self, context: grpc.ServicerContext) -> None:
        if not self._bucket(self.caller(context)).take():
            raise RateLimited(f"rate limit of {self.rate:g} requests/s (burst {self.burst:g}) exceeded; "
                              "retry later with backoff")

    def admit(self, context):
        self.check(context)
