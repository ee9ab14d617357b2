"""Adaptive attackers of ``--attacks adaptive`` (issue 19): attacker data are disjoint from
the evaluated identities (asserted, and the assertion fires), each attacker trains on a toy
problem and beats its untrained self, bad settings are refused before anything loads, and a
run on the stand-in nets records every attacker with its budget, n and a 95 % interval."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from photoveil.errors import InvalidInput
from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks import ADAPTIVE_ATTACKERS, ATTACKS, DEFAULT_ATTACKS
from photoveil.evaluation.attacks import adaptive_base as B
from tests.test_evaluation import FIXTURE, _cfg, _toy_models


# ------------------------------------------------------------------------------ disjointness
def test_attacker_identities_are_disjoint_from_the_evaluated_ones():
    from photoveil.data.faces import scan_identity_folder

    folder = scan_identity_folder(FIXTURE)
    evaluated = folder.identities[:4]
    pool = B.attacker_data(folder, evaluated, seed=0, calib_identities=2)
    attacker = set(pool.order) | set(pool.calib_identities)
    assert attacker and not attacker & set(evaluated)
    assert attacker == {n for n in folder.identities if n not in evaluated and len(folder.images[n]) >= 2}
    assert not set(pool.order) & set(pool.calib_identities)      # calibration identities are held out
    data = pool.budget(0)
    assert set(data.identities) == set(pool.order) and len(data.paths) == len(data.labels)
    small = pool.budget(5)
    assert 5 <= small.n_images < data.n_images                   # whole identities up to the budget


def test_disjointness_check_fires():
    with pytest.raises(B.DisjointnessError, match="overlap"):
        B.assert_disjoint(["a", "b"], ["b", "c"])
    B.assert_disjoint(["a"], ["b"])


def test_run_attacker_pool_excludes_test_identities_and_images(tmp_path):
    from photoveil.evaluation.context import ModelSet
    from photoveil.evaluation.data import select_data

    cfg = _cfg(tmp_path, adaptive_calib_identities=2)
    data = select_data(cfg)

    class Ctx:  # the two fields pool_for reads
        pass

    ctx = Ctx()
    ctx.cfg, ctx.data, ctx.models = cfg, data, ModelSet(_toy_models())
    pool = B.pool_for(ctx)
    assert not (set(pool.order) | set(pool.calib_identities)) & set(data.test)
    used = {str(p) for n in pool.order for p in pool.images[n]}
    assert not used & {str(p) for p in data.all_paths}


# ------------------------------------------------------------------------------ toy attackers
def _identity_features(n_ids, per_id, seed, shape=(8, 8, 8), signal=16, nuisance=16, scale=3.0):
    """Features = identity code in a shared subspace + large per-image nuisance elsewhere."""
    g = torch.Generator().manual_seed(1234)            # the subspaces are shared by every identity
    dim = shape[0] * shape[1] * shape[2]
    a, b = torch.randn(dim, signal, generator=g), torch.randn(dim, nuisance, generator=g)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randn(n_ids, signal, generator=g)
    u = ids.repeat_interleave(per_id, 0) + 0.3 * torch.randn(n_ids * per_id, signal, generator=g)
    v = scale * torch.randn(n_ids * per_id, nuisance, generator=g)
    z = (u @ a.T + v @ b.T) / signal ** 0.5
    return z.reshape(-1, *shape), torch.arange(n_ids).repeat_interleave(per_id)


def _top1(emb, labels, per_id):
    gi = torch.arange(0, len(labels), per_id)
    qi = torch.tensor([i for i in range(len(labels)) if i % per_id])
    return M.identification_top1(emb[gi], labels[gi], emb[qi], labels[qi])


def test_public_shallow_head_beats_an_untrained_head_on_unseen_identities():
    from photoveil.evaluation.attacks.adaptive_shallow import BackHead, HeadConfig, head_embed, train_head

    torch.set_num_threads(1)
    z, y = _identity_features(60, 6, seed=0, scale=2.0)
    zt, yt = _identity_features(20, 4, seed=1, scale=2.0)   # evaluated identities: never trained on
    head, wall = train_head(z, y, epochs=30, width=8, seed=0, lr=5e-3)
    torch.manual_seed(0)
    untrained = BackHead(HeadConfig(8, 8, 8)).eval()
    trained_top1 = _top1(head_embed(head, zt), yt, 4)
    untrained_top1 = _top1(head_embed(untrained, zt), yt, 4)
    assert wall > 0
    assert trained_top1 >= untrained_top1 + 0.25, (trained_top1, untrained_top1)


@pytest.mark.parametrize("method,params,overrides,expected", [
    ("fmd", {}, {}, "down64"),                            # FMD's feature layer (FMD_SPLITS), not block2
    ("fmd", {"split": "block3"}, {}, "block3"),           # an explicit FMD split wins
    ("pmt", {}, {}, "block2"),                            # PMT's matched split: the default
    ("pmt", {"split": "deep"}, {}, "block64_3"),          # ... or the deeper one
    ("generator", {}, {}, "block2"),
])
def test_attacked_split_is_the_layer_the_protection_keeps(method, params, overrides, expected):
    from types import SimpleNamespace

    from photoveil.evaluation.attacks.adaptive_shallow import attacked_split
    from photoveil.facemodels import registry

    net = SimpleNamespace(spec=registry.get_spec("faceapi-resnet34"))
    ctx = SimpleNamespace(model=lambda name: net, cfg=SimpleNamespace(method=method, overrides=overrides),
                          protection=SimpleNamespace(setting=("faceapi-resnet34",), params=params))
    assert attacked_split(ctx) == expected


def test_head_checkpoint_round_trip_weights_only(tmp_path):
    from photoveil.evaluation.attacks.adaptive_shallow import BackHead, HeadConfig, head_embed, load_head, save_head

    head = BackHead(HeadConfig(8, 12, 8)).eval()
    save_head(tmp_path / "h.pt", head, wall_s=1.5)
    back, meta = load_head(tmp_path / "h.pt")
    z = torch.randn(3, 8, 12, 12)
    assert torch.allclose(head_embed(head, z), head_embed(back, z)) and meta["wall_s"] == 1.5
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(InvalidInput, match="not a photoveil adaptive head"):
        load_head(tmp_path / "bad.pt")


def test_trained_purifier_beats_an_untrained_one():
    from photoveil.evaluation.attacks.adaptive_purifier import purify, train_purifier
    from photoveil.nets.unet import UNetGenerator

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.avg_pool2d(torch.rand(48, 3, 32, 32, generator=g), 5, 1, 2)
    pattern = 0.25 * torch.sign(torch.sin(torch.arange(32.0) * 1.3))[None, None, None, :]
    protected = (clean + pattern).clamp(0, 1)           # a fixed, learnable perturbation
    net, _ = train_purifier(protected[:40], clean[:40], epochs=25, width=0.25, seed=0)
    torch.manual_seed(0)
    untrained = UNetGenerator(3, width=0.25, depth=4).eval()
    err = (purify(net, protected[40:]) - clean[40:]).abs().mean()
    err_untrained = (purify(untrained, protected[40:]) - clean[40:]).abs().mean()
    err_none = (protected[40:] - clean[40:]).abs().mean()
    assert err < 0.6 * err_none and err < 0.6 * err_untrained, (err, err_none, err_untrained)


def test_robust_training_beats_the_off_the_shelf_recognizer():
    from photoveil.evaluation.attacks.adaptive_robust import finetune
    from photoveil.facemodels.embed import embed

    torch.set_num_threads(1)
    net = _toy_models()["toyA"].eval()                  # 32x32 stand-in recognizer

    def faces(n_ids, per_id, seed):
        g = torch.Generator().manual_seed(seed)
        base = torch.nn.functional.avg_pool2d(torch.rand(n_ids, 3, 32, 32, generator=g), 3, 1, 1)
        x = base.repeat_interleave(per_id, 0) + 0.05 * torch.randn(n_ids * per_id, 3, 32, 32, generator=g)
        return x.clamp(0, 1), torch.arange(n_ids).repeat_interleave(per_id)

    def protect(x):  # a strong fixed distortion: half contrast under stripes
        stripes = (torch.arange(32.0) % 4 < 2).float()[None, None, None, :]
        return (0.5 * x + 0.5 * stripes).clamp(0, 1)

    x, y = faces(30, 4, seed=0)
    xt, yt = faces(12, 4, seed=1)                       # unseen identities

    def top1(model):
        gi = torch.arange(0, len(yt), 4)
        qi = torch.tensor([i for i in range(len(yt)) if i % 4])
        return M.identification_top1(embed(model, xt[gi]), yt[gi], embed(model, protect(xt[qi])), yt[qi])

    model, wall = finetune(net, x, protect(x), y, epochs=12, lr=3e-3, seed=0)
    before, after = top1(net), top1(model)
    assert after >= before + 0.3, (before, after)
    assert all(not p.requires_grad for p in net.parameters())   # the off-the-shelf net is untouched


def test_artifact_model_attacker_reads_fmd_uploads_like_the_authorized_model(tmp_path):
    """FMD's published program carries the authorized embedding (``prepare``): the attacker who
    runs it needs no training and does as well as the provider — and it applies to FMD only."""
    from photoveil.evaluation.attacks.adaptive import get_attacker
    from photoveil.evaluation.runner import Evaluation, records_by

    cfg = _cfg(tmp_path, method="fmd", overrides={"steps": 2}, attacks=("adaptive",),
               adaptive_attackers=("artifact-model",), adaptive_calib_identities=2)
    recs = [r for r in Evaluation(cfg, _toy_models()).run(None) if r["attack"] == "adaptive"]
    (art,) = records_by(recs, attacker="artifact-model", metric="top1")
    (auth,) = records_by(recs, attacker="none", metric="top1", evaluated_model=art["authorized"])
    (art_clean,) = records_by(recs, attacker="artifact-model", metric="clean_top1")
    (auth_clean,) = records_by(recs, attacker="none", metric="clean_top1", evaluated_model=art["authorized"])
    assert art["attacker_images"] == 0 and art["attacker_epochs"] == 0 and art["n"] == auth["n"]
    assert art_clean["value"] == pytest.approx(auth_clean["value"], abs=1.5 / auth["n"])
    assert art["value"] == pytest.approx(auth["value"], abs=1.5 / auth["n"])
    pmt = _cfg(tmp_path, method="pmt", attacks=("adaptive",), adaptive_attackers=("artifact-model",))
    assert not get_attacker("artifact-model").applies(type("Ctx", (), {"cfg": pmt})())


# ------------------------------------------------------------------------------ config / CLI
def test_adaptive_is_registered_but_not_default():
    assert "adaptive" in ATTACKS and "adaptive" not in DEFAULT_ATTACKS
    assert ADAPTIVE_ATTACKERS == ("artifact-model", "public-shallow", "robust-training", "purifier-unet")


@pytest.mark.parametrize("kw,match", [
    ({"adaptive_attackers": ("nobody",)}, "unknown adaptive attacker"),
    ({"adaptive_budgets": (-1,)}, "adaptive_budgets"),
    ({"adaptive_budgets": ()}, "adaptive_budgets"),
    ({"adaptive_protect_budgets": (1,)}, "adaptive_protect_budgets"),
    ({"adaptive_epochs": 0}, "adaptive_epochs"),
    ({"adaptive_artifact": "/nonexistent"}, "go together"),
    ({"adaptive_artifact": "/nonexistent", "adaptive_public_key": "/nonexistent.pub"}, "does not exist"),
])
def test_bad_adaptive_settings_are_refused(kw, match):
    from photoveil.evaluation.config import EvalConfig

    with pytest.raises(InvalidInput, match=match):
        EvalConfig(**kw)


def test_cli_bad_adaptive_input_exits_2_before_models_load(capsys, monkeypatch):
    from photoveil import cli

    def boom(*a, **k):
        raise AssertionError("models loaded")

    monkeypatch.setattr("photoveil.facemodels.registry.load", boom)
    for argv in (["evaluate", "--attacks", "adaptive", "--adaptive-budgets", "500,lots"],
                 ["evaluate", "--attacks", "adaptive", "--adaptive-attackers", "public-shallow,oracle"],
                 ["evaluate", "--attacks", "adaptive", "--adaptive-epochs", "0"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "adaptive" in err, err


# ------------------------------------------------------------------------------ a full run (slow)
REQUIRED = {"method", "preset", "attacker", "attacker_images", "evaluated_model", "metric", "value", "n"}


@pytest.mark.slow
def test_adaptive_run_records_every_attacker(tmp_path):
    from photoveil.evaluation.runner import Evaluation, records_by

    cfg = _cfg(tmp_path, method="pmt", overrides={"steps": 2}, attacks=("adaptive",), evaluated=("toyA", "toyB"),
               calib_pairs=10, adaptive_budgets=(8, 0), adaptive_epochs=2, adaptive_protect_budgets=(6,),
               adaptive_recognizer="toyB", adaptive_finetune_epochs=1, adaptive_purifier_epochs=1,
               adaptive_calib_identities=2, adaptive_cache=str(tmp_path / "acache"))
    recs = [r for r in Evaluation(cfg, _toy_models()).run(tmp_path / "run") if r["attack"] == "adaptive"]
    assert all(REQUIRED <= set(r) for r in recs)
    assert {r["attacker"] for r in recs} == {"none", "public-shallow", "robust-training", "purifier-unet"}
    shallow = records_by(recs, attacker="public-shallow", metric="top1")
    assert {r["upload_mode"] for r in shallow} == {"image", "features"}
    assert len({r["attacker_images"] for r in shallow}) == 2            # the budget curve
    for r in recs:
        if r["metric"] in ("top1", "verification_accuracy_cal") and r["role"] != "aggregate":
            assert 0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1 and r["n"] > 0
    assert {r["stage"] for r in records_by(recs, attacker="robust-training")} == {"before", "after"}
    assert (tmp_path / "run" / "adaptive-curve-toyA.png").is_file()
    md = (tmp_path / "run" / "results.md").read_text()
    assert "Adaptive attackers" in md
    # cached heads are reused by a second run (same attacker data, same E_c)
    again = [r for r in Evaluation(cfg, _toy_models()).run(None) if r["attack"] == "adaptive"]
    assert all(r["head_cached"] for r in again if r["attacker"] == "public-shallow")


@pytest.mark.slow
def test_published_shallow_artifact_is_verified_before_use(tmp_path):
    from photoveil.errors import IntegrityError
    from photoveil.evaluation.attacks.adaptive_shallow import ArtifactShallow, EagerShallow, publish_shallow
    from photoveil.facemodels import registry

    net = registry.load("faceapi-resnet34")
    art, pub = publish_shallow(net, "block2", tmp_path / "pub", (150, 150), batch=2)
    src = ArtifactShallow(art, pub)
    x = torch.rand(3, 3, 150, 150)
    ref = EagerShallow(net, "block2", (150, 150)).features(x)
    assert torch.allclose(src.features(x), ref, atol=1e-3, rtol=1e-3)
    _, other = publish_shallow(net, "block2", tmp_path / "other", (150, 150), batch=2)
    with pytest.raises(IntegrityError):
        ArtifactShallow(art, other)                      # signed by another key: refused
