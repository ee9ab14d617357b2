"""``robust-training``: FaceCure-style robust training of an unauthorized recognizer.

The attacker runs the public protector (the run's method and settings: what every phone
runs) on its own labelled faces (identities disjoint from the evaluated ones) and fine-tunes
an off-the-shelf recognizer (``--adaptive-recognizer``, default ``mobileface``) on the
protected and the clean images with a CosFace margin loss, so that a protected face and the
clean face of the same person embed together (Radiya-Dixit, Tramèr et al., ICLR'22).

Scored before (the recognizer off the shelf) and after fine-tuning, on the run's protected
uploads (re-aligned onto the recognizer's template, as an unauthorized service would see them)
against a clean gallery aligned natively for the recognizer; thresholds are calibrated on the
attacker's own held-out identities.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from photoveil.evaluation.attacks import adaptive_base as B
from photoveil.evaluation.attacks.adaptive_shallow import CosFace, fit
from photoveil.facemodels.embed import embed
from photoveil.imageops import input_hw

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def finetune(net, clean: torch.Tensor, protected: torch.Tensor, labels: torch.Tensor, epochs: int,
             lr: float = 1e-4, seed: int = 0, progress: bool = False):
    """A copy of recognizer ``net`` fine-tuned with CosFace on clean + protected images
    (both at the net's input size) of ``labels``; the margin classifier starts at the class
    centroids of the off-the-shelf embeddings. Returns (fine-tuned net, seconds)."""
    model = copy.deepcopy(net)
    for p in model.parameters():
        p.requires_grad_(True)
    images = torch.cat([clean, protected])
    ys = torch.cat([labels, labels]).long()
    with torch.no_grad():
        emb = F.normalize(embed(net, clean), dim=1)
    k = int(labels.max()) + 1
    loss = CosFace(emb.shape[1], k)
    with torch.no_grad():
        loss.weight.copy_(torch.zeros(k, emb.shape[1]).index_add_(0, labels.long(), emb))

    def step(m, lo, batch):
        x, y = batch
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return lo(m(x).flatten(1), y)

    data = torch.utils.data.TensorDataset(images.float(), ys)
    wall = fit(model, loss, data, epochs, lr, batch_size=32, seed=seed, progress=progress, weight_decay=0.0,
               step_fn=step)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), wall


class RobustTraining(B.AdaptiveAttacker):
    name = "robust-training"
    methods = ("pmt", "fmd", "generator")

    def run(self, ctx: RunContext) -> list[dict]:
        cfg, prot, data = ctx.cfg, ctx.protection, ctx.data
        target = cfg.adaptive_recognizer
        net = ctx.model(target)
        hw = input_hw(net)
        pool = B.pool_for(ctx)
        test_paths = list(data.all_paths)
        gallery_clean = ctx.faces.get(test_paths, hw, model=target)
        upload_paths = list(prot.uploads)
        uploads = torch.stack([prot.uploads[p] for p in upload_paths])

        def embed_paths(model):
            return lambda ps: dict(zip(map(str, ps), embed(model, ctx.faces.get(list(ps), hw, model=target))))

        def evaluate(model, bud, stage, extra):
            thr, calib_acc = B.calibrate_threshold(embed_paths(model), pool.calib_pairs)
            clean = dict(zip(map(str, test_paths), embed(model, gallery_clean)))
            protected = dict(zip(upload_paths, embed(model, ctx.seen_by(target, B.quantize(uploads)))))
            scores = {**B.score(ctx, clean, protected, thr),
                      "attacker_calibration_accuracy": (calib_acc, len(pool.calib_pairs))}
            return B.records(ctx, self.name, target, scores, bud, thr, "image", stage=stage, **extra)

        out = evaluate(net, B.Budget(0, 0, 0), "before", {"budget": 0})
        for budget in cfg.adaptive_protect_budgets:
            att = pool.budget(budget, min_images=3)
            paths = att.paths
            _, protected, protect_s = B.protected_attacker_set(ctx, paths)
            clean_native = ctx.faces.get(paths, hw, model=target)
            with torch.no_grad():
                prot_native = torch.cat([ctx.seen_by(target, c) for c in B.quantize(protected).split(64)])
            model, wall = finetune(net, clean_native, prot_native, torch.tensor(att.labels), cfg.adaptive_finetune_epochs,
                                   seed=cfg.seed, progress=cfg.progress)
            bud = B.Budget(2 * att.n_images, len(att.identities), cfg.adaptive_finetune_epochs, wall + protect_s,
                           protected_images=att.n_images)
            out += evaluate(model, bud, "after", {"budget": budget, "protect_s": round(protect_s, 1)})
        return out


ATTACKER = RobustTraining
__all__ = ["ATTACKER", "RobustTraining", "finetune"]
