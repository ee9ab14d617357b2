"""``purifier``: cheap purifiers an attacker runs on a protected upload before an
off-the-shelf recognizer reads it (issue 19, adaptive attacks, part 2: the untrained ones).

* ``purifier-median`` — 3x3 median filter;
* ``purifier-bilateral`` — 5x5 bilateral filter (sigma_space 1.5 px, sigma_color 0.1);
* ``purifier-jpeg50up`` — 0.5x bicubic down-scale, JPEG q=50, bicubic up-scale back.

Each purified upload is scored by :func:`.abuse.measure` (every recognizer, against the clean
gallery; ``clean_*`` are the unpurified clean images as in ``abuse``). These purifiers use no
attacker data: their records say ``attacker_images`` 0. Every proportion record carries a
95 % Wilson interval (``ci_low`` / ``ci_high``). The trained denoiser (a U-Net on
(protected, clean) pairs) is not implemented yet.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks.abuse import measure
from photoveil.evaluation.metrics import wilson

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, k*k, H, W] neighbourhoods (reflect padding)."""
    n, c, h, w = x.shape
    p = F.unfold(F.pad(x, [k // 2] * 4, mode="reflect"), k)
    return p.view(n, c, k * k, h, w)


def median(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    return _patches(x, k).median(dim=2).values


def bilateral(x: torch.Tensor, k: int = 5, sigma_space: float = 1.5, sigma_color: float = 0.1) -> torch.Tensor:
    p = _patches(x, k)                                            # N, C, k*k, H, W
    r = torch.arange(k, dtype=x.dtype) - k // 2
    space = (-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma_space ** 2)).reshape(1, 1, k * k, 1, 1)
    color = -((p - x.unsqueeze(2)) ** 2).sum(1, keepdim=True) / (2 * sigma_color ** 2)
    wgt = torch.softmax(space + color, dim=2)
    return (p * wgt).sum(2)


def jpeg50_upscale(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=False).clamp(0, 1)
    return F.interpolate(M.jpeg(small, 50), size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


PURIFIERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "median": median,
    "bilateral": bilateral,
    "jpeg50up": jpeg50_upscale,
}


PROPORTIONS = ("top1", "clean_top1", "strict_accuracy", "strict_accuracy_cal",
               "clean_strict_accuracy", "clean_strict_accuracy_cal")


def run(ctx: RunContext) -> list[dict]:
    records = []
    paths = list(ctx.protection.uploads)
    batch = torch.stack([ctx.protection.uploads[p] for p in paths])
    preset = ctx.cfg.preset
    for name, fn in PURIFIERS.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            purified = dict(zip(paths, fn(batch)))
        wall = time.perf_counter() - t0
        for r in measure(ctx, purified, "none", ctx.protection.params, attack=f"purifier-{name}"):
            r.update(attacker=f"purifier-{name}", attacker_images=0, attacker_identities=0, attacker_epochs=0,
                     attacker_wall_s=round(wall, 3), preset=preset)
            if r["metric"] in PROPORTIONS and r.get("role") != "aggregate":
                r["ci_low"], r["ci_high"] = wilson(r["value"], r["n"])
            records.append(r)
        ctx.timings[f"purifier_{name}_s"] = time.perf_counter() - t0
    return records
