"""``abuse``: data abuse by face recognizers.

Eq. 10 strict accuracy (kappa = 0.2, see :mod:`photoveil.evaluation.metrics` for the
reading; also at each recognizer's calibrated threshold, ``*_cal``) and top-1
identification on the authorized and every unauthorized recognizer, protected and clean, as
an authorized x evaluated matrix (the paper's Table 7). A recognizer compares the protected
upload with the clean images aligned natively for it; an unauthorized one first re-aligns
the upload onto its own template (:meth:`RunContext.seen_by`), as a service running its own
aligner would.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import metrics as M
from photoveil.facemodels.embed import embed
from photoveil.imageops import input_hw

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext

# metrics averaged over the unauthorized recognizers (evaluated_model "mean-unauthorized")
AGGREGATED = ("strict_accuracy", "strict_accuracy_cal", "top1", "relative_strict_accuracy",
              "relative_strict_accuracy_cal", "relative_top1")


def measure(ctx: RunContext, uploads: dict[str, torch.Tensor], transform: str, params: dict,
            attack: str = "abuse", with_clean: bool = True) -> list[dict]:
    """Strict accuracy + top-1 of every recognizer on the (server-``transform``-ed) uploads
    ``{path: protected image}``; with ``with_clean`` also the same measurement on the
    unprotected images (``clean_*``, under the same transform) and ``relative_*``."""
    cfg, data = ctx.cfg, ctx.data
    setting = ctx.protection.setting
    auth = "+".join(setting)
    x1 = [str(p.path_a) for p in data.pairs]
    x2 = [str(p.path_b) for p in data.pairs]
    same = torch.tensor([p.same for p in data.pairs])
    records = []
    unauth: dict[str, list[float]] = {}
    for name in ctx.recognizers:
        net = ctx.model(name)
        ref = ctx.clean[name]
        role = "authorized" if name in setting else "unauthorized"
        prot_paths = list(uploads)
        imgs = M.apply_transform(transform, torch.stack([uploads[p] for p in prot_paths]))
        pe = dict(zip(prot_paths, embed(net, ctx.seen_by(name, imgs), cfg.batch_size)))
        e1 = torch.stack([pe[p] for p in x1])
        cos_self = M.cosine(e1, torch.stack([ref[p] for p in x1]))
        cos_pair = M.cosine(e1, torch.stack([ref[p] for p in x2]))
        qe = torch.stack([pe[str(p)] for p in data.queries])
        ge = torch.stack([ref[str(p)] for p in data.gallery])
        kappas = {"": cfg.kappa}
        if ctx.kappa_cal.get(name) is not None:
            kappas["_cal"] = ctx.kappa_cal[name]
        vals = {}
        for suffix, k in kappas.items():
            vals[f"strict_accuracy{suffix}"] = M.strict_accuracy(cos_self, cos_pair, same, k, "gate")
            vals[f"strict_accuracy_joint{suffix}"] = M.strict_accuracy(cos_self, cos_pair, same, k, "joint")
        vals.update({
            "self_cosine": cos_self.mean().item(),
            "top1": M.identification_top1(ge, torch.tensor(data.gallery_labels), qe,
                                          torch.tensor(data.query_labels)),
        })
        if with_clean:
            if transform == "none":
                c1 = torch.stack([ref[p] for p in x1])
                cq = torch.stack([ref[str(p)] for p in data.queries])
            else:  # the same transform on the unprotected upload (x~1 = T(x1))
                clean_paths = sorted(set(x1) | {str(p) for p in data.queries})
                faces = ctx.faces.get([Path(p) for p in clean_paths], input_hw(net), model=name)
                ce = dict(zip(clean_paths, embed(net, M.apply_transform(transform, faces), cfg.batch_size)))
                c1 = torch.stack([ce[p] for p in x1])
                cq = torch.stack([ce[str(p)] for p in data.queries])
            c_self = M.cosine(c1, torch.stack([ref[p] for p in x1]))
            c_pair = M.cosine(c1, torch.stack([ref[p] for p in x2]))
            for suffix, k in kappas.items():
                vals[f"clean_strict_accuracy{suffix}"] = M.strict_accuracy(c_self, c_pair, same, k, "gate")
                vals[f"clean_strict_accuracy_joint{suffix}"] = M.strict_accuracy(c_self, c_pair, same, k, "joint")
            vals["clean_top1"] = M.identification_top1(ge, torch.tensor(data.gallery_labels), cq,
                                                       torch.tensor(data.query_labels))
            for m in [f"strict_accuracy{s}" for s in kappas] + ["top1"]:
                c = vals[f"clean_{m}"]
                vals[f"relative_{m}"] = vals[m] / c if c > 0 else float("nan")
        for metric, value in vals.items():
            n = len(data.queries) if "top1" in metric else len(data.pairs)
            kappa = None if "strict" not in metric else kappas["_cal" if metric.endswith("_cal") else ""]
            records.append(ctx.record(authorized=auth, evaluated_model=name, metric=metric, value=value, attack=attack,
                                      transform=transform, params=params, role=role, n=n, kappa=kappa))
            if role == "unauthorized":
                unauth.setdefault(metric, []).append(value)
    for metric, values in unauth.items():
        if metric in AGGREGATED:
            records.append(ctx.record(authorized=auth, evaluated_model="mean-unauthorized", metric=metric,
                                      value=sum(values) / len(values), attack=attack, transform=transform,
                                      params=params, role="aggregate", n=len(values)))
    return records


def run(ctx: RunContext) -> list[dict]:
    """The abuse metrics on the protected uploads as uploaded."""
    return measure(ctx, ctx.protection.uploads, "none", ctx.protection.params)
