"""Exceptions shared by the CLI, the library and the gRPC server.

Every error a user can cause derives from :class:`PhotoveilError`; its message says what
was wrong and what is accepted. The CLI prints it without a traceback, the server maps
each subclass to one gRPC status code.
"""


class PhotoveilError(Exception):
    """Base class of errors caused by input, configuration or the environment."""


class InvalidInput(PhotoveilError, ValueError):
    """A value, file or tensor that does not meet its contract (-> INVALID_ARGUMENT)."""


class NotFound(PhotoveilError, LookupError):
    """An unknown model, checkpoint, identity or file (-> NOT_FOUND)."""


class ModelsMissing(NotFound):
    """Face models have not been pulled into the cache yet."""


class IntegrityError(PhotoveilError):
    """A download, artifact or signature failed verification (-> FAILED_PRECONDITION)."""


class DownloadError(PhotoveilError):
    """A network fetch failed (offline, registry error) (-> UNAVAILABLE)."""


class UnsupportedOp(PhotoveilError, NotImplementedError):
    """A graph operation that the TF.js importer cannot translate."""
