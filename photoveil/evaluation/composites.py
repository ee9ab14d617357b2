"""Seeded full-size test photos: face photos pasted onto large procedural backgrounds.

Used by the detection-recall measurement (:mod:`.detect_recall`) and, at small sizes, by
the tests of ``photoveil protect``. A face photo (an LFW-style frame, face in the middle)
is centre-cropped to :data:`CROP` of its side and pasted so that its nominal face box
(:data:`FACE` of the frame's side, centred: the BlazeFace box of an LFW deep-funneled
frame is 0.42 of it on average) spans ``fraction`` of the background's long side. The
paste is feathered at its edges so no hard square frames the face.

The backgrounds are multi-octave coloured value noise with random rectangles and lines,
not natural scenes: a measurement on them shows detection across scales and tiles on
textured clutter, not the false-positive rate on real scenes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CROP = 0.7   # part of the face frame that is pasted
FACE = 0.42  # nominal face box side as a part of the face frame


def background(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """``[3, h, w]`` in [0, 1]: coloured noise at several octaves plus rectangles and bars."""
    img = torch.zeros(3, h, w)
    amp = 0.5
    for cells in (4, 12, 40, 140):
        g = torch.from_numpy(rng.random((3, cells, max(1, round(cells * w / h))), dtype=np.float32))
        img += amp * F.interpolate(g[None], size=(h, w), mode="bicubic", align_corners=False)[0]
        amp *= 0.5
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 40, w // 4)), y0 + int(rng.integers(h // 40, h // 4))
        if rng.random() < 0.4:  # a thin bar
            x1 = x0 + max(2, (x1 - x0) // 12)
        img[:, y0:y1, x0:x1] = torch.from_numpy(rng.random(3, dtype=np.float32))[:, None, None]
    return img.clamp(0, 1)


def _feather(side: int, frac: float = 0.08) -> torch.Tensor:
    d = torch.minimum(torch.arange(side) + 0.5, side - 0.5 - torch.arange(side)) / max(1.0, frac * side)
    ramp = d.clamp(0, 1)
    return torch.minimum(ramp[:, None], ramp[None, :])


@dataclass
class Pasted:
    """One pasted face: its nominal face box (x1, y1, x2, y2) in photo pixels and source."""

    box: tuple[float, float, float, float]
    source: str
    fraction: float


def composite(faces: list[tuple[torch.Tensor, str]], fractions: list[float], hw: tuple[int, int],
              rng: np.random.Generator, base: torch.Tensor | None = None) -> tuple[torch.Tensor, list[Pasted]]:
    """A ``[3, H, W]`` photo with each face ``(image [3, h, w], name)`` pasted at its
    ``fraction`` of the long side, at seeded positions that do not overlap (a face that
    finds no free place after 200 draws is left out)."""
    h, w = hw
    photo = background(h, w, rng) if base is None else base.clone()
    long = max(h, w)
    placed: list[Pasted] = []
    for (face, name), frac in zip(faces, fractions):
        fh, fw = face.shape[1:]
        side0 = min(fh, fw)
        c = int(round(side0 * CROP))
        top, left = (fh - c) // 2, (fw - c) // 2
        crop = face[:, top:top + c, left:left + c]
        side = int(round(frac * long * CROP / FACE))
        if side > min(h, w) or side < 8:
            continue
        patch = F.interpolate(crop[None].float(), size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp(0, 1)
        for _ in range(200):
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            if all(x + side <= p.box[0] - 0 or x >= p.box[2] or y + side <= p.box[1] or y >= p.box[3]
                   for p in (_square(q, CROP / FACE) for q in placed)):
                break
        else:
            continue
        m = _feather(side)
        photo[:, y:y + side, x:x + side] = m * patch + (1 - m) * photo[:, y:y + side, x:x + side]
        half = side * FACE / CROP / 2.0
        cx, cy = x + side / 2.0, y + side / 2.0
        placed.append(Pasted((cx - half, cy - half, cx + half, cy + half), name, frac))
    return photo, placed


def _square(p: Pasted, grow: float) -> Pasted:
    """``p`` with its box grown to the whole pasted square (for the overlap test)."""
    cx, cy = (p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2
    half = (p.box[2] - p.box[0]) * grow / 2
    return Pasted((cx - half, cy - half, cx + half, cy + half), p.source, p.fraction)


def matches(box, det_box) -> bool:
    """A detection finds a pasted face when its box centre lies in the nominal face box and
    its size is within a factor 2 of it."""
    cx, cy = (det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2
    size, dsize = box[2] - box[0], max(det_box[2] - det_box[0], det_box[3] - det_box[1])
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3] and 0.5 <= dsize / size <= 2.0


__all__ = ["background", "composite", "Pasted", "matches", "CROP", "FACE"]
