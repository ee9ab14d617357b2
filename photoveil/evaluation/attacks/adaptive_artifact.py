"""``artifact-model``: the recognizer a published artifact carries, run on the uploads.

FMD keeps the *authorized* model's features and embedding while it moves the others', so
its step program holds the whole authorized recognizer: the ``fmd-step`` program's
``prepare`` entry point maps an image to ``(logits, feat_x, emb_x)`` with ``emb_x`` the
authorized embedding (unit norm), and ``logits`` are over the provider's enrolled
identities. Whoever holds the artifact — every phone — therefore holds the authorized model
and needs no training at all: embed the uploads and a clean gallery with ``prepare`` and
match. This attacker does exactly that (budget: 0 images, 0 epochs) with its threshold
calibrated on the held-out attacker identities' clean pairs.

PMT's artifacts carry only ``E_c`` (up to the split) and the generator's only the
generator, so it applies to ``fmd`` alone. The embedding here is the run's protector's
``prepare`` — the module the ``fmd-step`` program is lowered from (``tests/test_export.py``
checks the .pte's ``prepare`` against it).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from photoveil.evaluation.attacks import adaptive_base as B

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


class ArtifactModel(B.AdaptiveAttacker):
    name = "artifact-model"
    methods = ("fmd",)

    def applies(self, ctx: RunContext) -> bool:
        return super().applies(ctx) and hasattr(ctx.protection.protector, "prepare")

    @staticmethod
    def embed(ctx: RunContext, images: torch.Tensor) -> torch.Tensor:
        prepare = ctx.protection.protector.prepare
        with torch.no_grad():
            return torch.cat([prepare(chunk)[2] for chunk in images.split(ctx.cfg.batch_size)])

    def run(self, ctx: RunContext) -> list[dict]:
        t0 = time.perf_counter()
        prot = ctx.protection
        faces = lambda ps: ctx.faces.get(list(ps), prot.size, model=prot.setting[0])  # noqa: E731
        clean_paths = list(ctx.data.all_paths)
        clean = dict(zip(map(str, clean_paths), self.embed(ctx, faces(clean_paths))))
        paths = list(prot.uploads)
        uploads = B.quantize(torch.stack([prot.uploads[p] for p in paths]))
        protected = dict(zip(paths, self.embed(ctx, uploads)))
        pool = B.pool_for(ctx)
        thr, calib_acc = B.calibrate_threshold(
            lambda ps: dict(zip(map(str, ps), self.embed(ctx, faces(ps)))), pool.calib_pairs)
        spent = B.Budget(0, 0, 0, time.perf_counter() - t0)
        model = f"artifact-prepare@{prot.setting[0]}"
        scores = B.score(ctx, clean, protected, thr)
        scores["attacker_calibration_accuracy"] = (calib_acc, len(pool.calib_pairs))
        return B.records(ctx, self.name, model, scores, spent, thr, "image", artifact="fmd-step:prepare")


ATTACKER = ArtifactModel
__all__ = ["ATTACKER", "ArtifactModel"]
