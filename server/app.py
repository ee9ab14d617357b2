"""Assemble and run the server: ``build_server(config, host=None) -> (server, port)``, ``serve(config)``.

Shutdown order (``PhotoveilServer.stop``): health flips to NOT_SERVING, new calls are
refused while in-flight calls get ``grace`` seconds (waited for at most ``STOP_MARGIN_S``
more), the handler pool stops, then the batcher drains, the stream pool stops and the
gallery closes (WAL checkpointed).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from photoveil.errors import InvalidInput
from photoveil.server.artifact_versions import VersionedArtifactStore
from photoveil.server.batching import DynamicBatcher
from photoveil.server.config import ServerConfig
from photoveil.server.gallery import GalleryStore
from photoveil.server.gallery_backends import open_gallery
from photoveil.server.interceptors import (AuthInterceptor, ConcurrencyInterceptor, ErrorInterceptor,
                                          RateLimitInterceptor)
from photoveil.server.model_host import BatchKey, ModelHost
from photoveil.server.recognition import RecognitionPlane
from photoveil.server.servicer import ArtifactServicer, RecognitionServicer
from photoveil.server.tiny_models import tiny_model
from photoveil.v1 import artifacts_pb2, artifacts_pb2_grpc, recognition_pb2, recognition_pb2_grpc

log = logging.getLogger("photoveil.server")
STOP_MARGIN_S = 3.0  # shutdown: how long past grace_s to wait for gRPC before closing the rest
SERVICE_NAMES = (
    recognition_pb2.DESCRIPTOR.services_by_name["RecognitionService"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
)


def host_from_config(config: ServerConfig) -> ModelHost:
    host = ModelHost(num_threads=config.torch_threads or None)
    for m in config.models:
        if m.source == "registry":
            ModelHost.from_registry({m.id: m.name}, host=host, verify_threshold=m.verify_threshold)
        elif m.source == "tiny":
            tiny_model(host, m.id, m.name)
        else:
            ModelHost.from_zoo({m.id: m.name}, host=host)
    return host


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls.enabled:
        return None
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    try:
        client_ca = read(config.tls.client_ca) if config.tls.client_ca else None
        return grpc.ssl_server_credentials([(read(config.tls.key), read(config.tls.cert))],
                                           root_certificates=client_ca, require_client_auth=client_ca is not None)
    except OSError as exc:
        raise InvalidInput(f"cannot read TLS files: {exc}") from None


class PhotoveilServer:
    """A started-or-startable gRPC server with the parts that need an orderly shutdown."""

    def __init__(self, grpc_server: grpc.Server, health_servicer: health.HealthServicer,
                 recognition: RecognitionServicer, batcher: DynamicBatcher[BatchKey] | None, gallery: GalleryStore,
                 host: ModelHost, grace_s: float, drain_s: float = 0.0,
                 handler_pool: futures.ThreadPoolExecutor | None = None):
        self.grpc_server, self.health, self.recognition = grpc_server, health_servicer, recognition
        self.batcher, self.gallery, self.host, self.grace_s = batcher, gallery, host, grace_s
        self.drain_s, self.handler_pool = drain_s, handler_pool
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def start(self) -> "PhotoveilServer":
        self.grpc_server.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Graceful, idempotent shutdown (health first, then calls, batcher, gallery)."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.grace_s if grace is None else grace
            log.info("shutting down: NOT_SERVING, %.1f s grace for in-flight calls", grace)
            self.health.enter_graceful_shutdown()
            if self.drain_s:  # let load balancers see NOT_SERVING before calls are refused
                time.sleep(self.drain_s)
            # Bounded: every handler watches its call, but a stuck one must not hold the process.
            if not self.grpc_server.stop(grace).wait(grace + STOP_MARGIN_S):
                log.warning("calls still running %.1f s after the grace period; closing anyway", STOP_MARGIN_S)
            if self.handler_pool is not None:  # gRPC leaves its handler threads to us
                self.handler_pool.shutdown(wait=False, cancel_futures=True)
            if self.batcher is not None:
                self.batcher.close()
            self.recognition.close()
            self.gallery.close()
            self._stopped.set()
            log.info("stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def build_server(config: ServerConfig, host: ModelHost | None = None,
                 gallery: GalleryStore | None = None) -> tuple[PhotoveilServer, int]:
    """Build (not start) the server; bind ``HOST:0`` to get a free port (returned)."""
    host = host if host is not None else host_from_config(config)
    if gallery is None:
        gallery = open_gallery(config)  # SQLite file, or PostgreSQL when gallery_url is set
    batching = config.batching
    batcher = (DynamicBatcher(host.run, batching.max_batch_size, batching.max_wait_ms / 1000.0, batching.workers)
               if batching.enabled else None)
    interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor()]
    tokens = config.auth.tokens()
    if tokens:
        interceptors.append(AuthInterceptor(tokens, config.limits.auth_failures_per_s,
                                            config.limits.auth_failure_burst))
    elif not config.bind.startswith(("127.0.0.1:", "[::1]:", "localhost:")):
        log.warning("no auth.token_env configured and binding %s: anyone who reaches it can call", config.bind)
    if config.limits.max_concurrent_rpcs:  # here, not gRPC's own limit: health and reflection stay exempt
        interceptors.append(ConcurrencyInterceptor(config.limits.max_concurrent_rpcs))
    if config.limits.rate_per_s > 0:
        interceptors.append(RateLimitInterceptor(config.limits.rate_per_s, config.limits.burst, by_token=bool(tokens)))
    limit = config.limits.max_message_bytes
    handler_pool = futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc")
    server = grpc.server(
        handler_pool,
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.so_reuseport", 0)],
    )
    store = (VersionedArtifactStore(config.artifacts_dir, config.limits.max_message_bytes, config.artifacts_public_key)
             if config.artifacts_dir else None)
    recognition = RecognitionServicer(RecognitionPlane(host, gallery, batcher, config.limits.max_batch_items),
                                      config.limits, artifacts=store)
    recognition_pb2_grpc.add_RecognitionServiceServicer_to_server(recognition, server)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(ArtifactServicer(store), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = _credentials(config)
    try:
        port = (server.add_secure_port(config.bind, credentials) if credentials
                else server.add_insecure_port(config.bind))
    except RuntimeError as exc:
        gallery.close()
        raise InvalidInput(f"cannot bind {config.bind}: {exc}") from None
    return PhotoveilServer(server, health_servicer, recognition, batcher, gallery, host, config.grace_s,
                           config.drain_s, handler_pool), port


def _return_large_frees_to_os() -> None:
    """glibc raises its mmap threshold after big frees, so decoded images would stay in the
    heap after their call; a fixed 1 MiB threshold hands them back (no-op elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def serve(config: ServerConfig, host: ModelHost | None = None) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    _return_large_frees_to_os()
    server, port = build_server(config, host)
    server.start()
    log.info("photoveil server on %s (port %d, %s, models: %s)", config.bind, port,
             "TLS" if config.tls.enabled else "plaintext", ", ".join(m.model_id for m in server.host.models()))
    print(f"serving on port {port}", flush=True)  # a line scripts can wait for
    requested = threading.Event()

    def on_signal(signum, frame):
        log.info("received %s", signal.Signals(signum).name)
        requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not requested.wait(0.5):
        pass
    server.stop()
    deadline, stuck = time.monotonic() + STOP_MARGIN_S, []
    for t in threading.enumerate():
        if not t.daemon and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
    if stuck:  # the gallery is closed: leave without waiting for them at interpreter exit
        log.warning("exiting with %d threads still running (%s)", len(stuck), ", ".join(sorted(set(stuck))[:5]))
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0
