"""The one mapping from exceptions to gRPC status codes.

Used by the error interceptor for whole calls and by RecognizeStream for single
items, so a given failure always gets the same code wherever it happens.
"""
from __future__ import annotations

import logging
import uuid

import grpc

from photoveil.errors import (DownloadError, IntegrityError, InvalidInput, NotFound, PhotoveilError,
                              UnsupportedOp)
from photoveil.wire import TooLarge

log = logging.getLogger("photoveil.server")


class Unauthenticated(PhotoveilError):
    """Missing or wrong credentials (-> UNAUTHENTICATED)."""


class RateLimited(PhotoveilError):
    """Over the configured request rate (-> RESOURCE_EXHAUSTED)."""


class Overloaded(PhotoveilError):
    """A bounded server resource (decode slots, concurrent calls) is busy (-> RESOURCE_EXHAUSTED)."""


# Most specific first: TooLarge is an InvalidInput, ModelsMissing a NotFound.
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (IntegrityError, grpc.StatusCode.FAILED_PRECONDITION),
    (DownloadError, grpc.StatusCode.UNAVAILABLE),
    (UnsupportedOp, grpc.StatusCode.UNIMPLEMENTED),
    (PhotoveilError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(exc: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """(code, message) for an exception; unexpected ones are logged with an incident id."""
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code, str(exc) or cls.__name__
    incident = uuid.uuid4().hex[:12]
    log.error("internal error in %s (incident %s)", method or "call", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}); the server logged it"
