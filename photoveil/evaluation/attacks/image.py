"""``image`` (measured on every run, not selectable): SSIM and PSNR between original and
protected, and UP(sigma, kappa) with the (first) authorized recognizer (Eq. 9); plus the
readability witness (``readable_*`` records, :mod:`photoveil.evaluation.readability`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import metrics as M
from photoveil.facemodels.embed import embed

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def measure(ctx: RunContext, protected: torch.Tensor, params: dict, attack: str = "image") -> list[dict]:
    """Image metrics of ``protected`` against the setting's originals; UP only for
    ``attack="image"`` (the sweep records SSIM / PSNR alone)."""
    cfg, prot = ctx.cfg, ctx.protection
    name = prot.setting[0]
    net = ctx.model(name)
    originals = prot.originals
    vals = {"ssim": M.ssim(originals, protected).mean().item(),
            "psnr": M.psnr(originals, protected).clamp(max=100.0).mean().item()}
    if attack == "image":
        up = M.up_score(lambda x: embed(net, x, cfg.batch_size), originals, protected,
                        cfg.up_sigma, cfg.up_kappa, seed=cfg.seed)
        vals.update({"up": up["up"], "up_utility": up["utility"], "up_privacy_1-ssim": up["privacy"]})
    p = {**params, "up_sigma": cfg.up_sigma, "up_kappa": cfg.up_kappa} if attack == "image" else params
    return [ctx.record(authorized=prot.authorized, evaluated_model=name, metric=metric, value=value, attack=attack,
                       params=p, role="image", n=len(originals)) for metric, value in vals.items()]


def run(ctx: RunContext) -> list[dict]:
    from photoveil.evaluation import readability

    return measure(ctx, ctx.protection.images, ctx.protection.params) + readability.measure(ctx)
