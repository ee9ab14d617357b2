"""Small real models and a loopback server for tests, demos and load tests.

``tiny_host()`` hosts two deterministic conv nets at 32x32: ``tiny-embed`` (embedding,
split point ``block1``) and ``tiny-cls`` (10 classes, split point ``block1``).
``local_server()`` runs a server on 127.0.0.1 with a free port and waits for SERVING.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Iterator

import grpc
import torch
from torch import nn

from photoveil.server.config import ServerConfig
from photoveil.server.model_host import ModelHost, ModelKind

INPUT = 32
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class TinyNet(nn.Module):
    """conv-relu (block1) -> conv-relu -> global average pool -> linear."""

    def __init__(self, out_features: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, out_features)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))

    def split(self, point: str = "block1") -> tuple[nn.Module, nn.Module]:
        if point != "block1":
            raise ValueError(f"TinyNet splits only at 'block1', got {point!r}")
        return self.block1, nn.Sequential(self.block2, self.head)


TINY_MODELS = ("tiny-embed", "tiny-cls")


def tiny_model(host: ModelHost, model_id: str, name: str):
    """Register tiny net ``name`` (one of TINY_MODELS) under ``model_id``."""
    if name == "tiny-embed":
        net = TinyNet(32, seed=1)
        return host.register(model_id, net, kind=ModelKind.EMBEDDING, input_size=INPUT,
                             splits={"block1": net.split()}, verify_threshold=0.9)
    if name == "tiny-cls":
        net = TinyNet(len(CLASSES), seed=2)
        return host.register(model_id, net, kind=ModelKind.CLASSIFICATION, input_size=INPUT,
                             splits={"block1": net.split()}, labels=CLASSES)
    raise ValueError(f"unknown tiny model {name!r}; accepted: {', '.join(TINY_MODELS)}")


def tiny_host(host: ModelHost | None = None) -> ModelHost:
    host = host or ModelHost()
    for name in TINY_MODELS:
        tiny_model(host, name, name)
    return host


def wait_serving(target: str, timeout: float = 20.0, credentials: grpc.ChannelCredentials | None = None,
                 options=()) -> None:
    """Poll the health service until the server answers SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

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


@contextlib.contextmanager
def local_server(config: ServerConfig | None = None, host: ModelHost | None = None, **overrides
                 ) -> Iterator[tuple[object, str]]:
    """Yield (PhotoveilServer, "127.0.0.1:PORT"); stops it (grace 0) afterwards."""
    from photoveil.server.app import build_server

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
