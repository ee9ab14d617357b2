"""Readiness from the caller's side: wait until a server's gRPC health service says SERVING.

The server sets every service NOT_SERVING until it has started, so a process that starts
one (the demo, the load test, tests) polls this instead of guessing with a sleep.
"""
from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(target: str, timeout: float = 20.0, credentials: grpc.ChannelCredentials | None = None,
                 options=()) -> None:
    """Poll the health service of ``target`` until it answers SERVING; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        channel = (grpc.secure_channel(target, credentials, options=options) if credentials
                   else grpc.insecure_channel(target))
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as exc:
            last = exc
        finally:
            channel.close()
        time.sleep(0.05)
    raise TimeoutError(f"server at {target} not SERVING after {timeout} s (last error: {last})")
