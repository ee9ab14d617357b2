"""Two small deterministic conv nets the server can host (config ``source = "tiny"``).

``tiny-embed`` (32-d embedding) and ``tiny-cls`` (the ten CIFAR-10 classes) take 32x32
RGB and publish split point ``block1``. Their weights come from a fixed seed, so every
process hosts the same model version: they let the server, its clients and load tests
run without downloading real models.
"""
from __future__ import annotations

import torch
from torch import nn

from photoveil.labels import CIFAR10_CLASSES
from photoveil.server.model_host import HostedModel, ModelHost, ModelKind

INPUT = 32
CLASSES = CIFAR10_CLASSES
TINY_MODELS = ("tiny-embed", "tiny-cls")


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


def tiny_model(host: ModelHost, model_id: str, name: str) -> HostedModel:
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
    """``host`` (default: a new one) with both tiny nets under their own names."""
    host = host or ModelHost()
    for name in TINY_MODELS:
        tiny_model(host, name, name)
    return host
