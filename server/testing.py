"""A loopback server for tests: ``local_server()`` serves the tiny nets on 127.0.0.1.

The models it hosts by default are :mod:`photoveil.server.tiny_models`; readiness is
:func:`photoveil.server.health.wait_serving`. Production code does not import this module.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator

from photoveil.server.app import PhotoveilServer, build_server
from photoveil.server.config import ServerConfig
from photoveil.server.health import wait_serving
from photoveil.server.model_host import ModelHost
from photoveil.server.tiny_models import tiny_host


@contextlib.contextmanager
def local_server(config: ServerConfig | None = None, host: ModelHost | None = None, **overrides
                 ) -> Iterator[tuple[PhotoveilServer, str]]:
    """Yield (server, "127.0.0.1:PORT") with a free port and an in-memory gallery; stops it (grace 0) afterwards."""
    config = replace(config or ServerConfig(), **{"bind": "127.0.0.1:0", "gallery_path": ":memory:", **overrides})
    server, port = build_server(config, host if host is not None else tiny_host())
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        if not config.tls.enabled:
            wait_serving(target)
        yield server, target
    finally:
        server.stop(0)
