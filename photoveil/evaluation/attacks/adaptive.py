"""``adaptive``: attackers who hold the published artifact (issue 19).

Every phone — so every attacker — holds the protection artifact. Each attacker here trains
on *attacker data* (identities of the data folder that are not evaluated; asserted) and is
scored on the run's protected uploads of the evaluated identities against a clean gallery:

* ``artifact-model`` (:mod:`.adaptive_artifact`) — no training: the authorized embedding
  that FMD's published step program carries (its ``prepare`` entry point), run on the uploads;
* ``public-shallow`` (:mod:`.adaptive_shallow`) — the published ``E_c`` (from the signed
  artifact) frozen, a back half trained on it with a CosFace margin loss, at each attacker
  budget (``--adaptive-budgets``), for both upload modes (PMT);
* ``robust-training`` (:mod:`.adaptive_robust`) — an unauthorized recognizer fine-tuned on
  the attacker's own faces protected with the public protector plus the clean ones
  (``before`` / ``after``);
* ``purifier-unet`` (:mod:`.adaptive_purifier`) — a U-Net denoiser trained on (protected,
  clean) pairs made with the public protector, then every off-the-shelf recognizer.

Plus ``attacker`` ``none``: the authorized model(s) on the same uploads (the utility side of
every countermeasure). Records: ``attack`` ``adaptive``, ``attacker``, ``attacker_images`` /
``_identities`` / ``_epochs`` / ``_wall_s`` / ``_protected_images``, ``load_1m``, ``preset``,
``upload_mode``, ``n``, ``ci_low`` / ``ci_high`` (95 % Wilson). With an output folder the
curve of attacker top-1 against attacker images is written to ``adaptive-curve.png``.
"""
from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks import ADAPTIVE_ATTACKERS
from photoveil.evaluation.attacks import adaptive_base as B
from photoveil.facemodels.embed import embed

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext

# attacker name -> module of this package that defines ``ATTACKER`` (a B.AdaptiveAttacker)
MODULES = {"artifact-model": "adaptive_artifact", "public-shallow": "adaptive_shallow",
           "robust-training": "adaptive_robust", "purifier-unet": "adaptive_purifier"}
assert tuple(MODULES) == ADAPTIVE_ATTACKERS


def get_attacker(name: str) -> B.AdaptiveAttacker:
    return importlib.import_module(f"photoveil.evaluation.attacks.{MODULES[name]}").ATTACKER()


def authorized_reference(ctx: RunContext) -> list[dict]:
    """Top-1 / clean top-1 of the authorized model(s) on the same uploads (``attacker`` none)."""
    data, prot = ctx.data, ctx.protection
    paths = list(prot.uploads)
    images = B.quantize(torch.stack([prot.uploads[p] for p in paths]))
    out = []
    for name in prot.setting:
        net = ctx.model(name)
        ref = ctx.clean[name]
        pe = dict(zip(paths, embed(net, images, ctx.cfg.batch_size)))
        ge = torch.stack([ref[str(p)] for p in data.gallery])
        gl, ql = torch.tensor(data.gallery_labels), torch.tensor(data.query_labels)
        scores = {"top1": (M.identification_top1(ge, gl, torch.stack([pe[str(p)] for p in data.queries]), ql),
                           len(data.queries)),
                  "clean_top1": (M.identification_top1(ge, gl, torch.stack([ref[str(p)] for p in data.queries]), ql),
                                 len(data.queries))}
        out += B.records(ctx, "none", name, scores, B.Budget(0, 0, 0), role="authorized")
    return out


def run(ctx: RunContext) -> list[dict]:
    records = authorized_reference(ctx)
    for name in ctx.cfg.adaptive_attackers:
        attacker = get_attacker(name)
        if not attacker.applies(ctx):
            continue
        t0 = time.perf_counter()
        records += attacker.run(ctx)
        ctx.timings[f"adaptive_{name}_s"] = time.perf_counter() - t0
    if ctx.out_dir is not None:
        from photoveil.evaluation.report import plot_adaptive

        plot_adaptive(ctx.out_dir / f"adaptive-curve-{ctx.protection.authorized}.png", records)
    return records
