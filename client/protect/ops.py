"""Tensor operations shared by the gradient-step protectors (PMT, FMD).

Everything here is a pure function of its tensor inputs (random draws are made by the
caller and passed in), so the same code runs eagerly and inside the exported on-device
step programs, where randomness must be an input for the program to be deterministic.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KERNELS = ("gaussian", "linear")


def ti_kernel(kind: str, length: int, channels: int = 3) -> torch.Tensor:
    """Translation-invariance smoothing kernel of Pu et al. Sec. 5.3, ``[C,1,2k+1,2k+1]``.

    * ``linear``: ``W_ij = (1 - |i|/(k+1)) (1 - |j|/(k+1))``;
    * ``gaussian``: ``W_ij ~ exp(-(i^2 + j^2) / (2 sigma^2))`` with ``sigma = k / sqrt(3)``
      (radius 3 sigma);

    both normalised to sum 1, one copy per channel for a depthwise convolution.
    """
    if kind not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kind!r}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"kernel length must be an int >= 1, got {length!r}")
    if kind == "linear":
        w1 = 1.0 - torch.arange(-length, length + 1, dtype=torch.float64).abs() / (length + 1)
    else:  # separable: the outer product of the 1-D Gaussian is the 2-D one
        w1 = _gaussian_1d(length, length / math.sqrt(3.0))
    w = torch.outer(w1, w1)
    w = (w / w.sum()).to(torch.float32)
    return w.expand(channels, 1, *w.shape).contiguous()


def _gaussian_1d(radius: int, sigma: float) -> torch.Tensor:
    """``exp(-r^2 / (2 sigma^2))`` for ``r`` in ``-radius..radius``, float64, not normalised."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-(r**2) / (2 * sigma**2))


def gaussian_kernel(sigma: float, channels: int = 3) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[C,1,1,2r+1]`` with std ``sigma`` pixels, radius ``r = ceil(3 sigma)``,
    for :func:`separable_smooth`."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    w = _gaussian_1d(math.ceil(3 * sigma), sigma)
    w = (w / w.sum()).to(torch.float32)
    return w.expand(channels, 1, 1, w.numel()).contiguous()


def separable_smooth(x: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``x`` convolved ('same', zero padding, depthwise) with ``row [C,1,1,k]`` along W, then
    ``col [C,1,k,1]`` (its transpose, passed in: XNNPACK takes only constant conv weights) along
    H: a 2-D Gaussian at ``2k`` instead of ``k^2`` multiply-adds per pixel."""
    pad = row.shape[-1] // 2
    x = F.conv2d(x, row, padding=(0, pad), groups=x.shape[1])
    return F.conv2d(x, col, padding=(pad, 0), groups=x.shape[1])


def smooth(grad: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
    """``W (x) grad``: depthwise 'same' convolution of the gradient (identity if no kernel)."""
    if kernel is None:
        return grad
    pad = kernel.shape[-1] // 2
    return F.conv2d(grad, kernel, padding=pad, groups=grad.shape[1])


def affine_warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``images`` by per-image affine matrices ``theta [N,2,3]`` (normalised coords).

    ``F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`` written
    with ``gather``: its input-gradient is then a ``scatter_add``, which the ExecuTorch
    runtime has, whereas it has no kernel for ``grid_sampler_2d_backward`` (PMT step
    programs differentiate through this warp).
    """
    n, c, h, w = images.shape
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    # Normalised -> pixel coordinates (align_corners=False), clamped to the border.
    x = (((grid[..., 0] + 1) * w - 1) / 2).clamp(0, w - 1).reshape(n, 1, h * w)
    y = (((grid[..., 1] + 1) * h - 1) / 2).clamp(0, h - 1).reshape(n, 1, h * w)
    x0, y0 = x.floor(), y.floor()
    wx, wy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = images.reshape(n, c, h * w)

    def at(yi, xi):
        return flat.gather(2, (yi * w + xi).expand(n, c, h * w))

    out = (at(y0, x0) * (1 - wx) + at(y0, x1) * wx) * (1 - wy) + (at(y1, x0) * (1 - wx) + at(y1, x1) * wx) * wy
    return out.reshape(n, c, h, w)


def random_affine_theta(n: int, max_rotate_deg: float, max_shift: float, max_scale: float,
                        generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Random small rotation / shift / scale matrices ``[N,2,3]`` for :func:`affine_warp`."""
    u = torch.rand(n, 4, generator=generator, device=device) * 2 - 1
    ang = u[:, 0] * math.radians(max_rotate_deg)
    scale = 1.0 + u[:, 1] * max_scale
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    row0 = torch.stack([cos, -sin, u[:, 2] * max_shift], dim=1)
    row1 = torch.stack([sin, cos, u[:, 3] * max_shift], dim=1)
    return torch.stack([row0, row1], dim=1)


def identity_theta(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N,2,3]`` identity affine matrices (no warp)."""
    return torch.eye(2, 3, device=device).expand(n, 2, 3).contiguous()


def pooled_concat(feats: list[torch.Tensor], pool: int) -> torch.Tensor:
    """Multi-layer aggregation (Pu et al. Alg. 2): ``concat_l AvgPool2d(f_l)`` flattened.

    ``pool`` 1 means no pooling. 2-D features (vectors) are taken as they are.
    """
    out = []
    for f in feats:
        if f.dim() == 4 and pool > 1:
            f = F.avg_pool2d(f, pool, ceil_mode=True)
        out.append(f.flatten(1))
    return torch.cat(out, dim=1)

