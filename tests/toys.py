"""Small deterministic stand-in models shared by the tests (no download, milliseconds to run)."""
from __future__ import annotations

import torch
from torch import nn

from photoveil.client.protect.fmd import GalleryClassifier
from photoveil.client.protect.shallow import ShallowModel


def face_front(seed: int = 0) -> ShallowModel:
    """face-api-like front: 5x5/2 VALID stem + ReLU, 3x3/2 max-pool, a residual 3x3 block."""
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c2(torch.relu(self.c1(x))) + x)

    seg = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.ReLU(), nn.MaxPool2d(3, 2), Block())
    return ShallowModel([seg], "toy", ["block1"])


def two_taps(seed: int = 0) -> ShallowModel:
    """Two segments, taps ``a`` and ``b`` (multi-layer aggregation, MR-PMT)."""
    torch.manual_seed(seed)
    seg1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    seg2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    return ShallowModel([seg1, seg2], f"toy{seed}", ["a", "b"])


def gallery_classifier(seed: int = 0) -> GalleryClassifier:
    """A recognizer cut in two with a head over 4 random identity centroids (FMD)."""
    torch.manual_seed(seed)
    shallow = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2))
    rest = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 12))
    for p in [*shallow.parameters(), *rest.parameters()]:
        p.requires_grad_(False)
    return GalleryClassifier(shallow, rest, torch.randn(4, 12))


def classifier(seed: int = 0, k: int = 4) -> nn.Module:
    """A 2-conv image classifier over ``k`` classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))
