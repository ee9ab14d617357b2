"""The authorized model's shallow part ``E_c`` as PMT sees it: features at one or more taps.

``ShallowModel(x)`` returns a list of feature tensors, one per tap, in depth order; the
last tap is the split point whose output is uploaded in the features case and consumed by
the server's ``rest`` half. Earlier taps only feed PMT's multi-layer aggregation.

Taps are computed in one pass over consecutive segments ``[0,k1), [k1,k2), ...`` when the
network can be cut into segments (``segment_fn``), otherwise each tap runs its own
shallow half (same result, more compute).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from photoveil.errors import InvalidInput


class ShallowModel(nn.Module):
    """Consecutive segments of a network; ``forward`` returns every segment's output.

    Args:
        segments: modules applied in order; segment ``i`` takes segment ``i-1``'s output.
        name: model id (for manifests and messages).
        points: names of the taps, one per segment.
    """

    def __init__(self, segments: Sequence[nn.Module], name: str = "", points: Sequence[str] = ()):
        super().__init__()
        if not segments:
            raise ValueError("a shallow model needs at least one segment")
        self.segments = nn.ModuleList(segments)
        self.name = name
        self.points = list(points) or [str(i) for i in range(len(segments))]
        if len(self.points) != len(self.segments):
            raise ValueError(f"{len(self.points)} point names for {len(self.segments)} segments")
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for seg in self.segments:
            x = seg(x)
            if isinstance(x, (tuple, list)):
                raise InvalidInput(
                    f"tap {self.points[len(feats)]!r} of {self.name or 'the model'} is not a clean cut "
                    "(several tensors cross it); pick a named split point"
                )
            feats.append(x)
        return feats

    def upload_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last tap: what the phone uploads in the features case."""
        return self.forward(x)[-1]


def from_facenet(net: nn.Module, points: Sequence[str | int]) -> ShallowModel:
    """Shallow taps of a registry ``FaceNet`` at named split points (any order, deduplicated).

    Uses ``net.segment(a, b)`` when the network offers it (one pass); otherwise stacks the
    nested shallow halves ``net.split(p)[0]`` (each tap recomputes from the input).
    """
    spec = net.spec
    index = {}
    for p in points:
        if isinstance(p, int):
            index[str(p)] = p
        elif p in spec.split_points:
            index[p] = spec.split_points[p]
        else:
            raise InvalidInput(
                f"{spec.name} has no split point {p!r}; named split points: {', '.join(spec.split_points)}"
            )
    ordered = sorted(index.items(), key=lambda kv: kv[1])
    segment: Callable | None = getattr(net, "segment", None)
    if segment is not None:
        segs, start = [], 0
        for _, k in ordered:
            segs.append(segment(start, k))
            start = k
        return ShallowModel(segs, spec.name, [n for n, _ in ordered])
    return _Recompute([net.split(k)[0] for _, k in ordered], spec.name, [n for n, _ in ordered])


class _Recompute(ShallowModel):
    """Taps computed independently from the input (for networks without ``segment``)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for point, seg in zip(self.points, self.segments):
            f = seg(x)
            if isinstance(f, (tuple, list)):
                raise InvalidInput(f"tap {point!r} of {self.name} is not a clean cut; pick a named split point")
            feats.append(f)
        return feats
