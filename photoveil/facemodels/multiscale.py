"""Every face of a full-size photo: BlazeFace over a pyramid of windows, NMS across them,
then each face re-detected in a window around it for accurate keypoints.

BlazeFace sees a 256x256 input. Squeezing a 4032x3024 phone photo into it leaves a face of
5 % of the long side about 13 px wide, where the model's keypoints are too coarse to align
by (and on textured backgrounds it is missed). So the photo is looked at through windows:

* ``whole``: the photo letter-boxed into one square (what :meth:`BlazeFaceDetector.detect`
  does); faces of >= ~10 % of the long side;
* ``zoomed out``: the photo in the middle of a square twice its long side, for photos
  that are mostly face (tight crops; BlazeFace misses faces that fill its whole input);
* ``tiles``: for each level ``k`` in ``levels``, square tiles of side ``long / k``
  overlapping by ``overlap`` of a tile, so a face up to that size lies whole in one tile.
  Detections touching an inner tile edge are cut faces and dropped (the neighbouring tile
  holds them whole).

All candidates go through one weighted NMS in photo pixels. Each surviving face is then
detected again in a square of ``refine`` times its box side centred on it (the face fills
~1/3 of the input, as in LFW frames, where BlazeFace's keypoints are best); the refined
detection replaces the coarse one, and a face the refinement does not confirm is dropped
(``verify``), which removes most false positives of the small tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from photoveil.errors import InvalidInput
from photoveil.facemodels.detect import BlazeFaceDetector, Detection, _iou, _raw_outputs, decode, weighted_nms


@dataclass(frozen=True)
class Window:
    """A square of the photo, ``side`` pixels from ``(x0, y0)`` (may reach past the photo:
    zeros there), and which edges are inner tile edges (cut faces there are dropped)."""

    x0: float
    y0: float
    side: float
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)  # left, top, right, bottom


def _positions(length: int, side: float, stride: float) -> list[float]:
    if side >= length:
        return [(length - side) / 2.0]
    n = math.ceil((length - side) / stride) + 1
    return [i * (length - side) / (n - 1) for i in range(n)]


def windows(h: int, w: int, levels: tuple[int, ...] = (2, 3), overlap: float = 0.35,
            min_tile: int = 384) -> list[Window]:
    """The whole photo, the zoomed-out photo, and the tiles of each level (skipped when
    a tile would be under ``min_tile`` px: the whole pass already sees its faces large)."""
    side = max(h, w)
    out = [Window(-int((side - w) / 2.0), -int((side - h) / 2.0), side),
           Window(-(2 * side - w) / 2.0, -(2 * side - h) / 2.0, 2.0 * side)]
    for k in levels:
        tile = side / k
        if tile < min_tile:
            continue
        stride = tile * (1.0 - overlap)
        xs, ys = _positions(w, tile, stride), _positions(h, tile, stride)
        for y in ys:
            for x in xs:
                out.append(Window(x, y, tile, (x > 0, y > 0, x + tile < w, y + tile < h)))
    return out


def _window(image: torch.Tensor, x0: int, y0: int, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` square of ``image`` from ``(x0, y0)``, zeros outside it."""
    _, h, w = image.shape
    part = image[:, max(0, y0):max(0, min(h, y0 + size)), max(0, x0):max(0, min(w, x0 + size))]
    left, top = max(0, -x0), max(0, -y0)
    return F.pad(part, (left, size - part.shape[2] - left, top, size - part.shape[1] - top))


class MultiScaleDetector:
    """Every face in a photo of any size (see the module docstring).

    ``levels``: tile levels (tiles of side long/k); ``overlap`` of neighbouring tiles in
    [0, 0.9]; ``refine``: re-detection window side as a multiple of the face box (>= 1.5;
    0 = off); ``verify``: drop faces the refinement does not find again; ``batch``:
    windows per model call.
    """

    def __init__(self, detector: BlazeFaceDetector, levels: tuple[int, ...] = (2, 3), overlap: float = 0.35,
                 refine: float = 3.0, verify: bool = True, batch: int = 16, edge_margin: float = 2.0):
        if not 0.0 <= overlap <= 0.9:
            raise InvalidInput(f"overlap must be in [0, 0.9], got {overlap}")
        if refine and refine < 1.5:
            raise InvalidInput(f"refine must be 0 (off) or >= 1.5, got {refine}")
        if any(int(k) < 2 for k in levels):
            raise InvalidInput(f"tile levels must be ints >= 2, got {levels}")
        self.detector = detector
        self.levels = tuple(int(k) for k in levels)
        self.overlap = overlap
        self.refine = refine
        self.verify = verify
        self.batch = batch
        self.edge_margin = edge_margin

    @property
    def size(self) -> int:
        return self.detector.input_size

    @torch.no_grad()
    def _run(self, image: torch.Tensor, wins: list[Window]):
        """Candidates (probs [M], boxes [M, 4], keypoints [M, 6, 2]) in photo pixels.
        Windows of one side share one antialiased resize of the photo (a 12 MP photo is
        resized once per level, not once per tile)."""
        probs, boxes, kps = [], [], []
        inputs, frames = [], []  # model input, (x0, y0, sx, sy): input pixel -> photo pixel
        _, h, w = image.shape
        for side in sorted({wn.side for wn in wins}):
            group = [wn for wn in wins if wn.side == side]
            scale = self.size / side
            hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
            small = image[None].float() if (hh, ww) == (h, w) else F.interpolate(
                image[None].float(), size=(hh, ww), mode="bilinear", antialias=True, align_corners=False)
            sx, sy = w / ww, h / hh
            for wn in group:
                x0, y0 = round(wn.x0 / sx), round(wn.y0 / sy)
                inputs.append(_window(small[0], x0, y0, self.size))
                frames.append((wn, x0 * sx, y0 * sy, sx, sy))
        for start in range(0, len(inputs), self.batch):
            scores, regs = _raw_outputs(self.detector.model, torch.stack(inputs[start:start + self.batch]))
            for j, (wn, ox, oy, sx, sy) in enumerate(frames[start:start + self.batch]):
                p, b, k = decode(scores[j], regs[j], self.size)
                keep = p >= self.detector.score_threshold
                p, b, k = p[keep], b[keep], k[keep]
                if not len(p):
                    continue
                b = b * torch.tensor([sx, sy, sx, sy]) + torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
                k = (k + 0.5) * torch.tensor([sx, sy]) - 0.5 + torch.tensor([ox, oy], dtype=torch.float32)
                cut = torch.zeros(len(p), dtype=torch.bool)
                m = self.edge_margin * sx
                left, top, right, bottom = wn.inner
                if left:
                    cut |= b[:, 0] <= wn.x0 + m
                if top:
                    cut |= b[:, 1] <= wn.y0 + m
                if right:
                    cut |= b[:, 2] >= wn.x0 + wn.side - m
                if bottom:
                    cut |= b[:, 3] >= wn.y0 + wn.side - m
                probs.append(p[~cut]), boxes.append(b[~cut]), kps.append(k[~cut])
        if not probs:
            return torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, 6, 2)
        return torch.cat(probs), torch.cat(boxes), torch.cat(kps)

    def _merge(self, probs, boxes, kps) -> list[Detection]:
        faces = weighted_nms(probs, boxes, kps, self.detector.score_threshold, self.detector.iou_threshold,
                             self.detector.max_faces * 4)
        out = [Detection(b.double().numpy(), k.double().numpy(), s) for s, b, k in faces]
        return _drop_nested(out)

    def detect(self, image: torch.Tensor) -> list[Detection]:
        """All faces in ``image`` ``[3, H, W]`` (RGB in [0, 1]), most confident first,
        at most ``detector.max_faces``."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidInput(f"detect() takes one [3, H, W] RGB image, got {tuple(image.shape)}")
        _, h, w = image.shape
        coarse = self._merge(*self._run(image, windows(h, w, self.levels, self.overlap)))
        if not self.refine or not coarse:
            return coarse[: self.detector.max_faces]
        wins = []
        for f in coarse:
            cx, cy = (f.box[0] + f.box[2]) / 2.0, (f.box[1] + f.box[3]) / 2.0
            side = self.refine * max(f.box[2] - f.box[0], f.box[3] - f.box[1])
            wins.append(Window(cx - side / 2.0, cy - side / 2.0, side))
        refined = []
        for f, wn in zip(coarse, wins):
            x0, y0, side = int(wn.x0), int(wn.y0), max(8, int(round(wn.side)))
            p, b, k = self._run(_window(image, x0, y0, side), [Window(0, 0, side)])
            b, k = b + torch.tensor([x0, y0, x0, y0], dtype=torch.float32), k + torch.tensor([x0, y0], dtype=torch.float32)
            best = None
            if len(p):
                ious = _iou(torch.as_tensor(f.box, dtype=torch.float32), b)
                cand = [(float(p[i]), b[i], k[i]) for i in range(len(p)) if ious[i] > 0.3]
                if cand:
                    merged = weighted_nms(torch.tensor([c[0] for c in cand]), torch.stack([c[1] for c in cand]),
                                          torch.stack([c[2] for c in cand]), self.detector.score_threshold,
                                          self.detector.iou_threshold, 1)
                    s, bb, kk = merged[0]
                    best = Detection(bb.double().numpy(), kk.double().numpy(), s)
            if best is not None:
                refined.append(best)
            elif not self.verify:
                refined.append(f)
        refined = sorted(_drop_nested(refined), key=lambda d: -d.score)
        return refined[: self.detector.max_faces]


def _drop_nested(faces: list[Detection], inside: float = 0.6) -> list[Detection]:
    """Faces sorted by score with any face mostly (``inside`` of its area) within a more
    confident one removed: the same face seen at two scales, one box cut by a tile."""
    faces = sorted(faces, key=lambda d: -d.score)
    kept: list[Detection] = []
    for f in faces:
        ok = True
        for g in kept:
            x1, y1 = max(f.box[0], g.box[0]), max(f.box[1], g.box[1])
            x2, y2 = min(f.box[2], g.box[2]), min(f.box[3], g.box[3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            if inter > inside * min(f.area, g.area):
                ok = False
                break
        if ok:
            kept.append(f)
    return kept


_DEFAULT: dict = {}


def default_multiscale(cache_dir=None, **kwargs) -> MultiScaleDetector:
    """A shared :class:`MultiScaleDetector` over the shared BlazeFace model."""
    from photoveil.facemodels.detect import default_detector

    key = (str(cache_dir), tuple(sorted(kwargs.items())))
    if key not in _DEFAULT:
        _DEFAULT[key] = MultiScaleDetector(default_detector(cache_dir=cache_dir), **kwargs)
    return _DEFAULT[key]


__all__ = ["Window", "windows", "MultiScaleDetector", "default_multiscale"]
