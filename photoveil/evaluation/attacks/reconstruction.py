"""``reconstruction``: recovering the face from the uploaded features (Table 6).

Level 1 (a decoder trained on (image, feature) pairs of *train* identities) and Level 2
(white-box TV inversion) on unprotected, random-noise and protected uploaded features
(PMT's ``upload`` point, else the split point) of the (first) authorized model, next to
the SSIM floor of content-free images (flat grey, the mean training face). The attack
models themselves are in :mod:`photoveil.evaluation.reconstruction`.

Records: ``attack`` ``reconstruction-l1`` / ``-l2`` / ``-floor``, ``features`` the kind.
Files (with an output folder): ``decoder-level1.pt``, ``reconstruction-<authorized>.png``.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import reconstruction as R
from photoveil.facemodels.embed import embed
from photoveil.imageops import ResizeTo, input_hw

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def run(ctx: RunContext) -> list[dict]:
    from photoveil.client.protect.shallow import from_facenet
    from photoveil.evaluation.report import save_recon_grid

    cfg, data, prot, out_dir = ctx.cfg, ctx.data, ctx.protection, ctx.out_dir
    params = prot.params
    name = prot.setting[0]
    net = ctx.model(name)
    hw = prot.size
    split = net.spec.split_point(params.get("upload") or params.get("split") or cfg.overrides.get("split"))
    shallow = from_facenet(net, [split])
    front = ResizeTo(input_hw(net))

    def e_c(x):
        return shallow.upload_features(front(x))

    def f(x):
        return embed(net, x, cfg.batch_size)

    test_paths = data.protected_paths[: cfg.recon_test_images]
    x = ctx.faces.get(test_paths, hw, model=name)
    xt = torch.stack([prot.uploads[str(p)] for p in test_paths])
    with torch.no_grad():
        z_clean, z_prot = e_c(x), e_c(xt)
    z_noise = R.noise_features(z_clean, z_prot, seed=cfg.seed)
    kinds = {"unprotected": z_clean, "random-noise": z_noise, "protected": z_prot}
    auth = prot.authorized
    base = {**params, "split": split}
    records = []

    def record(level, kind, scores, extra):
        for metric, value in scores.items():
            records.append(ctx.record(authorized=auth, evaluated_model=name, metric=metric, value=value,
                                      attack=f"reconstruction-{level}", params={**base, **extra, "features": kind},
                                      role="authorized", n=len(x), features=kind))

    recon_images = {}
    # Level 1: decoder trained on the attacker's (image, feature) pairs of train identities
    t0 = time.perf_counter()
    train_x = ctx.faces.get(data.train_images, hw, model=name)
    with torch.no_grad():
        train_z = torch.cat([e_c(c) for c in train_x.split(cfg.batch_size)])
    # the floor: what images that carry nothing of the test faces score against them
    # (SSIM rewards smooth outputs: a flat grey face scores ~0.44 on LFW crops)
    floors = {"grey": torch.full_like(x, 0.5), "mean-train-face": train_x.mean(0, keepdim=True).expand_as(x)}
    for kind, ref in floors.items():
        record("floor", kind, R.score(ref.contiguous(), x), {})
    decoder = R.train_decoder(train_x, train_z, epochs=cfg.recon_epochs, width=cfg.recon_width, seed=cfg.seed,
                              progress=cfg.progress)
    l1 = {"train_images": len(train_x), "epochs": cfg.recon_epochs, "width": cfg.recon_width}
    if out_dir is not None:
        R.save_decoder(out_dir / "decoder-level1.pt", decoder, authorized=name, split=split, **l1)
    for kind, z in kinds.items():
        r = R.reconstruct(decoder, z)
        recon_images[("L1", kind)] = r
        record("l1", kind, R.score(r, x, f, cfg.kappa), l1)
    ctx.timings["reconstruction_l1_s"] = time.perf_counter() - t0
    # Level 2: white-box inversion through E_c with a TV prior
    t0 = time.perf_counter()
    l2 = {"steps": cfg.invert_steps, "alpha": cfg.invert_alpha, "tv_weight": cfg.invert_tv}
    for kind, z in kinds.items():
        r = R.invert(e_c, z, tuple(x.shape[1:]), steps=cfg.invert_steps, alpha=cfg.invert_alpha / 255.0,
                     tv_weight=cfg.invert_tv, progress=cfg.progress, desc=f"invert[{kind}]")
        recon_images[("L2", kind)] = r
        record("l2", kind, R.score(r, x, f, cfg.kappa), l2)
    ctx.timings["reconstruction_l2_s"] = time.perf_counter() - t0
    if out_dir is not None:
        save_recon_grid(out_dir / f"reconstruction-{auth}.png", x, xt, recon_images)
    return records
