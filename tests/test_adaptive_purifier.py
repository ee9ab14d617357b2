"""The cheap purifiers of ``--attacks purifier`` (issue 19): the filters do what they say
on hand-made images, and a run on the stand-in nets records every purifier with its
attacker budget and a 95 % interval."""
from __future__ import annotations

import torch

from photoveil.evaluation.attacks import ATTACKS
from photoveil.evaluation.attacks import purifier as P
from tests.test_evaluation import _cfg, _toy_models


def test_median_removes_impulse_noise_and_keeps_flat_images():
    flat = torch.full((1, 3, 16, 16), 0.5)
    noisy = flat.clone()
    noisy[0, :, 5, 7] = 1.0  # one salt pixel
    assert torch.allclose(P.median(noisy), flat)
    assert torch.allclose(P.bilateral(flat), flat, atol=1e-6)


def test_bilateral_keeps_edges_better_than_it_smooths_noise():
    torch.manual_seed(0)
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0
    noisy = (edge + 0.03 * torch.randn_like(edge)).clamp(0, 1)
    out = P.bilateral(noisy)
    assert (out - edge).abs().mean() < (noisy - edge).abs().mean()  # denoised ...
    assert out[..., 7].mean() < 0.2 and out[..., 8].mean() > 0.8    # ... and the edge is kept


def test_jpeg50_upscale_keeps_size_and_range():
    x = torch.rand(2, 3, 20, 20)
    y = P.jpeg50_upscale(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert not torch.allclose(x, y)


def test_wilson_interval():
    lo, hi = P.wilson(0.5, 100)
    assert 0.40 < lo < 0.5 < hi < 0.60
    assert P.wilson(0.0, 10)[0] == 0.0 and P.wilson(1.0, 10)[1] == 1.0


def test_purifier_attack_records_every_purifier(tmp_path):
    from photoveil.evaluation.runner import Evaluation, records_by

    assert "purifier" in ATTACKS
    cfg = _cfg(tmp_path, method="pmt", overrides={"steps": 2}, attacks=("purifier",), evaluated=("toyA", "toyB"),
               calib_pairs=0)
    recs = Evaluation(cfg, _toy_models()).run(None)
    for name in P.PURIFIERS:
        top1 = records_by(recs, attack=f"purifier-{name}", metric="top1", evaluated_model="toyB")
        assert len(top1) == 1
        r = top1[0]
        assert r["attacker"] == f"purifier-{name}" and r["attacker_images"] == 0 and r["n"] > 0
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
