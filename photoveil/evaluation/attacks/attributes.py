"""``attributes``: attribute estimation from the protected upload.

Eq. 11 CosSim of the attribute models' outputs (gear: age / gender / race; emotion) between
original and protected, plus the expected-age absolute difference in years, next to the
paper's ``x + delta`` Gaussian-noise baseline (std 0.3) for comparison (Table 8). Original
and protected are compared in the same (authorized) geometry, so only the protection
differs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import metrics as M
from photoveil.imageops import input_hw, resize_to

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext

# gear's age bins (<=20, 21-25, 26-30, 31-40, 41-50, 51-60, >60) -> representative ages
AGE_BIN_CENTRES = (18.0, 23.0, 28.0, 35.5, 45.5, 55.5, 65.0)
ATTRIBUTE_NOISE_SIGMA = 0.3  # the paper's x + delta baseline of Table 8


def attribute_outputs(net, images: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Attribute-model outputs ``{name: [N, K]}`` (probabilities) at the net's input size."""
    hw = input_hw(net)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out = net(resize_to(chunk, hw))
            if not isinstance(out, dict):
                out = {net.spec.name: out}
            for k, v in out.items():
                parts.setdefault(k, []).append(v.float().reshape(len(chunk), -1))
    return {k: torch.cat(v) for k, v in parts.items()}


def run(ctx: RunContext) -> list[dict]:
    """CosSim / absolute differences of every attribute model, for the protected images
    (method = the run's) and the noise baseline (method ``gaussian-noise``)."""
    cfg, prot = ctx.cfg, ctx.protection
    if not ctx.attribute_models:
        return []
    auth, originals, params = prot.authorized, prot.originals, prot.params
    gen = torch.Generator().manual_seed(cfg.seed)
    noisy = (originals + ATTRIBUTE_NOISE_SIGMA * torch.randn(originals.shape, generator=gen)).clamp(0, 1)
    records = []

    def add(name, metric, value, p, n, method):
        records.append(ctx.record(authorized=auth, evaluated_model=name, metric=metric, value=value,
                                  attack="attributes", params=p, role="attribute", n=n, method=method))

    for name in ctx.attribute_models:
        net = ctx.model(name)
        a0 = attribute_outputs(net, originals, cfg.batch_size)
        for images, method in ((prot.images, None), (noisy, "gaussian-noise")):
            a1 = attribute_outputs(net, images, cfg.batch_size)
            p = params if method is None else {"sigma": ATTRIBUTE_NOISE_SIGMA}
            for key, v0 in a0.items():
                v1 = a1[key]
                if v0.shape[1] >= 2:
                    add(name, f"cossim_{key}", M.attribute_cossim(v0, v1).mean().item(), p, len(v0), method)
                if key == "age" and v0.shape[1] == len(AGE_BIN_CENTRES):
                    centres = torch.tensor(AGE_BIN_CENTRES)
                    diff = M.attribute_abs_diff(v0 @ centres, v1 @ centres)
                    add(name, "age_abs_diff_years", diff.mean().item(), p, len(v0), method)
                elif v0.shape[1] == 1:
                    add(name, f"abs_diff_{key}", M.attribute_abs_diff(v0, v1).mean().item(), p, len(v0), method)
    return records
