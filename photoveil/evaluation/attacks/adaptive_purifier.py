"""``purifier-unet``: a denoiser the attacker trains to undo the public protector.

The attacker runs the public protector on its own faces (identities disjoint from the
evaluated ones), trains a small residual U-Net (:class:`~photoveil.nets.unet.UNetGenerator`,
``out = clamp(x + U(x))``, L1 loss, horizontal flips) to map each protected image back to its
clean original, then runs every off-the-shelf recognizer on the purified uploads
(:func:`.abuse.measure`: clean gallery, Eq. 10 strict accuracy and top-1, thresholds
calibrated on clean pairs of non-evaluated identities). Records carry the attacker's budget
and 95 % intervals.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from photoveil.evaluation.attacks import adaptive_base as B
from photoveil.evaluation.attacks.abuse import measure
from photoveil.evaluation.attacks.adaptive_shallow import fit
from photoveil.evaluation.attacks.purifier import PROPORTIONS, wilson

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext

KEEP = ("top1", "clean_top1", "strict_accuracy_cal", "clean_strict_accuracy_cal", "self_cosine")


def train_purifier(protected: torch.Tensor, clean: torch.Tensor, epochs: int, width: float = 0.25, seed: int = 0,
                   progress: bool = False):
    """A residual U-Net trained on (protected, clean) pairs; returns (net, seconds)."""
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(seed)
    net = UNetGenerator(3, width=width, depth=4)

    def step(m, _, batch):
        x, y = batch
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return F.l1_loss(m.perturbation(x) + x, y)

    data = torch.utils.data.TensorDataset(protected.float(), clean.float())
    wall = fit(net, torch.nn.Identity(), data, epochs, 2e-3, batch_size=8, seed=seed, progress=progress,
               weight_decay=0.0, step_fn=step)
    return net.eval(), wall


def purify(net, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(c) for c in images.split(16)])


class TrainedPurifier(B.AdaptiveAttacker):
    name = "purifier-unet"
    methods = ("pmt", "fmd", "generator")

    def run(self, ctx: RunContext) -> list[dict]:
        cfg, prot = ctx.cfg, ctx.protection
        pool = B.pool_for(ctx)
        paths = list(prot.uploads)
        uploads = B.quantize(torch.stack([prot.uploads[p] for p in paths]))
        out = []
        for budget in cfg.adaptive_protect_budgets:
            att = pool.budget(budget, min_images=3)
            clean, protected, protect_s = B.protected_attacker_set(ctx, att.paths)
            net, wall = train_purifier(protected, clean, cfg.adaptive_purifier_epochs, seed=cfg.seed,
                                       progress=cfg.progress)
            purified = dict(zip(paths, purify(net, uploads)))
            bud = B.Budget(2 * att.n_images, len(att.identities), cfg.adaptive_purifier_epochs, wall + protect_s,
                           protected_images=att.n_images)
            for r in measure(ctx, purified, "none", prot.params, attack="adaptive"):
                if r["metric"] not in KEEP:
                    continue
                r.update(attacker=self.name, preset=cfg.preset, upload_mode="image", budget=budget,
                         protect_s=round(protect_s, 1), **bud.fields())
                if r["metric"] in PROPORTIONS and r.get("role") != "aggregate":
                    r["ci_low"], r["ci_high"] = (round(v, 4) for v in wilson(r["value"], r["n"]))
                out.append(r)
        return out


ATTACKER = TrainedPurifier
__all__ = ["ATTACKER", "TrainedPurifier", "purify", "train_purifier"]
