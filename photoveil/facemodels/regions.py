"""Between a full-size photo and a face crop: the aligned crop of one face (antialiased
when the face is larger than the crop) and the inverse, pasting a protected crop back.

A face is described by the ``[2, 3]`` similarity ``matrix`` taking photo pixels to crop
pixels (:func:`photoveil.facemodels.align.landmark_matrix`; pixel centres at integers).
Pasting samples the protected crop at ``matrix @ p`` for every photo pixel ``p`` whose
image lies in the crop square, blended by a feathered mask that is 1 inside the square
and falls to 0 over ``feather`` of its side at the edges, and is exactly 0 outside it, so
every photo pixel outside the face region keeps its value bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from photoveil.facemodels.align import warp_affine

FEATHER = 0.08  # part of the crop side over which the pasted face fades into the photo


def _full(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])


def scale_of(matrix: np.ndarray) -> float:
    """Crop pixels per photo pixel of the similarity ``matrix``."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


def region(matrix: np.ndarray, size: int, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Photo pixel bounds ``(x0, y0, x1, y1)`` (exclusive ends) covering the crop square's
    preimage, clipped to the photo; None when it lies outside the photo."""
    inv = np.linalg.inv(_full(matrix))
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]])
    pts = (inv @ corners.T)[:2].T
    h, w = hw
    x0, y0 = max(0, int(math.floor(pts[:, 0].min()))), max(0, int(math.floor(pts[:, 1].min())))
    x1, y1 = min(w, int(math.ceil(pts[:, 0].max())) + 1), min(h, int(math.ceil(pts[:, 1].max())) + 1)
    return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)


def aligned_crop(image: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """``[3, size, size]`` crop of ``image`` ``[3, H, W]`` through ``matrix``. A face larger
    than the crop is first cut out and shrunk (antialiased) to about the crop's scale, so
    a 1000 px face is not sampled at every 7th pixel."""
    scale = scale_of(matrix)
    if scale >= 0.8:
        return warp_affine(image, matrix, size)
    box = region(matrix, size, tuple(image.shape[1:]))
    if box is None:
        return warp_affine(image, matrix, size)
    x0, y0, x1, y1 = box
    part = image[:, y0:y1, x0:x1].float()
    hh, ww = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
    small = F.interpolate(part[None], size=(hh, ww), mode="bilinear", antialias=True, align_corners=False)[0]
    sx, sy = ww / (x1 - x0), hh / (y1 - y0)
    # small pixel q <- photo pixel p: q = (p - origin + 0.5) * s - 0.5
    to_small = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1.0]])
    return warp_affine(small, (_full(matrix) @ np.linalg.inv(to_small))[:2], size)


def feather_mask(u: torch.Tensor, v: torch.Tensor, size: int, feather: float = FEATHER) -> torch.Tensor:
    """Mask at crop coordinates ``(u, v)``: 1 inside, ramping to 0 within ``feather *
    size`` of the square's edges, 0 outside."""
    d = torch.minimum(torch.minimum(u + 0.5, size - 0.5 - u), torch.minimum(v + 0.5, size - 0.5 - v))
    return (d / max(1e-6, feather * size)).clamp(0.0, 1.0)


def paste_back(photo: np.ndarray, crop: torch.Tensor, matrix: np.ndarray, feather: float = FEATHER,
               original: torch.Tensor | None = None) -> tuple[int, int, int, int] | None:
    """Blend the protected ``crop`` ``[3, s, s]`` (in [0, 1]) into ``photo`` (``[H, W, 3]``
    uint8, changed in place) at the face ``matrix`` maps to it. With ``original`` (the
    unprotected crop) only the perturbation ``crop - original`` is added, upsampled, to
    the photo's own pixels, so a face larger than the crop keeps its resolution (for
    additive methods: FMD, the generator); without it the crop replaces the face (PMT,
    whose output is not the face). Returns the changed region ``(x0, y0, x1, y1)``;
    pixels where the mask is 0 are not written."""
    size = crop.shape[-1]
    h, w = photo.shape[:2]
    box = region(matrix, size, (h, w))
    if box is None:
        return None
    x0, y0, x1, y1 = box
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64), torch.arange(x0, x1, dtype=torch.float64),
                            indexing="ij")
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    alpha = feather_mask(u, v, size, feather).float()
    # grid_sample, align_corners=False: normalised = (pixel + 0.5) / size * 2 - 1
    grid = torch.stack([(u + 0.5) / size * 2 - 1, (v + 0.5) / size * 2 - 1], -1).float()[None]
    source = crop.float() if original is None else crop.float() - original.float()
    sampled = F.grid_sample(source[None], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[0].permute(1, 2, 0)
    old = torch.from_numpy(photo[y0:y1, x0:x1].astype(np.float32) / 255.0)
    if original is None:
        new = alpha[..., None] * sampled.clamp(0, 1) + (1 - alpha[..., None]) * old
    else:
        new = (old + alpha[..., None] * sampled).clamp(0, 1)
    new8 = (new * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    keep = (alpha == 0).numpy()
    new8[keep] = photo[y0:y1, x0:x1][keep]
    photo[y0:y1, x0:x1] = new8
    return box


__all__ = ["FEATHER", "scale_of", "region", "aligned_crop", "feather_mask", "paste_back"]
