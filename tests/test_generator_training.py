"""Generator training: loss signs, aux cap, |SSIM|, face variant, config round-trip, resume, matrix."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from photoveil.errors import InvalidInput
from photoveil.generator_training import matrix as matrix_mod
from photoveil.generator_training.config import GeneratorTrainConfig
from photoveil.generator_training.datamodule import GeneratorDataModule, seeded_subset
from photoveil.generator_training.losses import classification_loss, face_loss, ranking_term, similarity_term
from photoveil.generator_training.module import GeneratorModule, cosine_with_warmup
from photoveil.generator_training.train import train
from photoveil.nets.unet import load_generator

torch.set_num_threads(1)


def small_cnn(seed: int, in_ch: int = 1, out: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_ch, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, out))


def tiny_config(**kw) -> GeneratorTrainConfig:
    base = dict(target="resnet18", aux="vgg13_bn", width=0.125, epochs=1, batch_size=16, val_size=16,
                augment=False, precision="32")
    return GeneratorTrainConfig(**{**base, **kw})


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def datamodule(cfg, n_train=32):
    return GeneratorDataModule(cfg, train=data(n_train, 0), val=data(16, 1), test=data(16, 2))


def ces(module, x, y):
    with torch.no_grad():
        xp = module.generator(x)
        t = nn.functional.cross_entropy(module.critic("target")(xp), y).item()
        a = nn.functional.cross_entropy(module.critic("aux")(xp), y).item()
    return t, a


def sharp_linear(seed: int) -> nn.Module:
    """A pixel-linear classifier with large weights: its CE reacts clearly to the generator."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    with torch.no_grad():
        model[1].weight.mul_(20)
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_training_steps_lower_target_ce_and_raise_aux_ce(seed):
    target, aux = sharp_linear(1 + seed), sharp_linear(100 + seed)
    x = data(32, seed).tensors[0]
    with torch.no_grad():
        y = target(x).argmax(1)  # labels the target gets right on clean images
    torch.manual_seed(seed)
    module = GeneratorModule(tiny_config(), target=target, aux=aux)
    opt = module.configure_optimizers()
    t0, a0 = ces(module, x, y)
    for _ in range(3):
        opt.zero_grad()
        module.compute_loss(x, y)[0]["loss"].backward()
        opt.step()
    t1, a1 = ces(module, x, y)
    assert t1 < t0 and a1 > a0, (t0, t1, a0, a1)
    # the critics stayed frozen: no gradients, eval mode
    assert all(p.grad is None for p in module.critic("target").parameters())
    assert not module.critic("aux").training


def test_aux_cap_stops_gradient_past_cap():
    x = torch.rand(4, 1, 32, 32)
    y = torch.zeros(4, dtype=torch.long)
    aux_logits = torch.zeros(4, 10)
    aux_logits[:, 1] = 20.0  # CE ~ 20 > cap
    aux_logits.requires_grad_(True)
    t_logits = torch.zeros(4, 10)
    out = classification_loss(x, x, y, t_logits, aux_logits, aux_ce_cap=5.0)
    out["loss"].backward()
    assert out["aux_ce"] > 5 and aux_logits.grad.abs().max() == 0
    aux_logits.grad = None
    classification_loss(x, x, y, t_logits, aux_logits, aux_ce_cap=None)["loss"].backward()
    assert aux_logits.grad.abs().max() > 0


def test_loss_signs_of_each_term():
    x = torch.rand(2, 1, 32, 32)
    y = torch.tensor([0, 1])
    good = torch.eye(10)[y] * 10
    bad = torch.eye(10)[1 - y] * 10
    lo = classification_loss(x, x, y, good, bad, w_ssim=0)["loss"]
    hi = classification_loss(x, x, y, bad, good, w_ssim=0)["loss"]
    assert lo < 0 < hi  # correct target + wrong aux is rewarded


def test_abs_ssim_penalises_inverted_images():
    x = torch.rand(2, 1, 32, 32).clamp(0.05, 0.95)
    signed, abs_val = similarity_term(x, 1 - x, "signed")
    absolute, _ = similarity_term(x, 1 - x, "abs")
    assert signed < 0 and absolute > 0 and torch.isclose(absolute, abs_val)
    assert torch.isclose(similarity_term(x, x, "abs")[0], torch.tensor(1.0), atol=1e-4)


class FaceStandIn(nn.Module):
    def __init__(self, seed: int, size: int):
        super().__init__()
        self.net = small_cnn(seed, in_ch=3, out=16)
        self.spec = SimpleNamespace(input_size=size)

    def forward(self, x):
        assert x.shape[-1] == self.spec.input_size
        return self.net(x)


def test_face_variant_keeps_target_embedding_and_pushes_aux():
    cfg = tiny_config(task="face", dataset="lfw", in_channels=3, image_size=24, target="a", aux="b")
    module = GeneratorModule(cfg, target=FaceStandIn(1, 24), aux=FaceStandIn(2, 20))
    x = torch.rand(8, 3, 24, 24)
    opt = module.configure_optimizers()
    parts0, _ = module.compute_loss(x, None)
    for _ in range(5):
        opt.zero_grad()
        module.compute_loss(x, None)[0]["loss"].backward()
        opt.step()
    parts1, _ = module.compute_loss(x, None)
    assert {"target_cos", "aux_cos", "ssim"} <= set(parts1)
    assert parts1["loss"] < parts0["loss"]
    assert parts1["aux_cos"] < parts0["aux_cos"]


def test_centred_target_term_sees_the_identity_part_turn():
    """Embeddings of different people that share most of their direction (face-api's: cosine
    ~0.9). A shrink toward the mean face and a turn of the off-mean part cost the same plain
    cosine; only the turn changes which gallery face is nearest, and only the centred term
    tells the two apart."""
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(64)
    m[0] = 1.0
    u = torch.randn(16, 64, generator=g)
    u[:, 0] = 0
    u = F.normalize(u, dim=1)                       # each person's off-mean direction
    clean = F.normalize(3 * m + u, dim=1)
    mu = clean.mean(0)
    shrunk = F.normalize(clean + 0.4 * m, dim=1)    # toward the mean: the off-mean part keeps its direction
    plain = F.cosine_similarity(shrunk, clean, dim=1)
    side = torch.randn(16, 64, generator=g)
    side[:, 0] = 0                                  # within the off-mean subspace ...
    side = F.normalize(side - (side * u).sum(1, keepdim=True) * u, dim=1)  # ... and orthogonal to u
    turned = plain[:, None] * clean + (1 - plain[:, None] ** 2).sqrt() * side  # same plain cosine
    x = torch.rand(16, 3, 16, 16)
    out = {name: face_loss(x, x, clean, e, None, None, w_target=1.0, w_ssim=0.0, target_mean=mu,
                           w_target_centred=2.0)
           for name, e in (("shrunk", shrunk), ("turned", turned), ("same", clean))}
    assert abs(out["shrunk"]["target_cos"] - out["turned"]["target_cos"]) < 1e-4
    assert 1 - out["turned"]["target_centred_cos"] > 3 * (1 - out["shrunk"]["target_centred_cos"])
    assert out["same"]["target_centred_cos"] == pytest.approx(1.0, abs=1e-5)
    plain_only = face_loss(x, x, clean, turned, None, None, w_target=1.0, w_ssim=0.0)
    assert "target_centred_cos" not in plain_only
    assert out["turned"]["loss"] == pytest.approx(
        plain_only["loss"] + 2.0 * (1 - out["turned"]["target_centred_cos"]), abs=1e-5)


class OffsetStandIn(nn.Module):
    """A face stand-in whose embeddings share a large common direction, as face-api's do."""

    def __init__(self, seed: int, size: int):
        super().__init__()
        self.inner = FaceStandIn(seed, size)
        self.spec = self.inner.spec
        self.register_buffer("offset", torch.full((16,), 3.0))

    def forward(self, x):
        e = torch.nn.functional.normalize(self.inner(x), dim=1)
        return e + self.offset


def _after_steps(module: GeneratorModule, x: torch.Tensor, y, steps: int = 10) -> dict:
    """``module``'s loss parts on ``(x, y)`` after ``steps`` optimizer steps on that one batch."""
    opt = module.configure_optimizers()
    for _ in range(steps):
        opt.zero_grad()
        module.compute_loss(x, y)[0]["loss"].backward()
        opt.step()
    return module.compute_loss(x, y)[0]


def test_mean_face_is_a_training_moving_average_and_the_centred_term_is_trained():
    cfg = tiny_config(task="face", dataset="lfw", in_channels=3, image_size=24, target="a", aux=None,
                      w_target_centred=5.0)
    module = GeneratorModule(cfg, target=OffsetStandIn(1, 24))
    x = torch.rand(8, 3, 24, 24)
    module.eval()
    parts, _ = module.compute_loss(x, None)
    assert module.target_mean is None and "target_centred_cos" in parts  # eval: the batch's own mean
    module.train()
    module.compute_loss(x, None)
    first = module.target_mean.clone()
    with torch.no_grad():
        batch_mean = torch.nn.functional.normalize(module.critic("target")(x[:4]), dim=1).mean(0)
    module.compute_loss(x[:4], None)
    assert torch.allclose(module.target_mean, 0.99 * first + 0.01 * batch_mean, atol=1e-6)
    final = {}
    for w in (0.0, 5.0):  # the centred term holds the off-mean part better than the plain one alone
        torch.manual_seed(0)
        module = GeneratorModule(tiny_config(task="face", dataset="lfw", in_channels=3, image_size=24, target="a",
                                             aux=None, w_target_centred=w, w_ssim=1.0), target=OffsetStandIn(1, 24))
        final[w] = _after_steps(module, x, None)["target_centred_cos"].item()
    assert final[5.0] > final[0.0] + 0.05, final


def test_training_step_augments_with_the_configured_shift(monkeypatch):
    """The crop shift reaches the augmentation (default 0: the shipped zoo never saw shifts)."""
    import photoveil.generator_training.module as module_mod

    seen = []
    monkeypatch.setattr(module_mod, "augment", lambda x, pad, hflip: seen.append((pad, hflip)) or x)
    for pad in (0, 3):
        module = GeneratorModule(tiny_config(augment=True, crop_pad=pad), target=small_cnn(0), aux=small_cnn(1))
        module.training_step((torch.rand(2, 1, 16, 16), torch.tensor([0, 1])), 0)
    assert seen == [(0, True), (3, True)]


def test_config_validation_and_round_trip():
    cfg = tiny_config(aux_ce_cap=None, subset=100)
    assert GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorTrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    for bad in (dict(width=0), dict(lr=0), dict(w_aux=-1), dict(task="x"), dict(aux="resnet18"),
                dict(ssim_mode="x"), dict(image_size=8), dict(precision="8"), dict(lr_schedule="step"),
                dict(crop_pad=-1), dict(aux_rescale=1.0), dict(aux_rescale=0.96)):
        with pytest.raises(ValueError):
            tiny_config(**bad)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    lrs = [cosine_with_warmup(s, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)  # 5 warm-up steps
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay after warm-up
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule_reaches_the_optimizer(tmp_path, schedule):
    cfg = tiny_config(lr_schedule=schedule)
    train(cfg, tmp_path / "run", datamodule=datamodule(cfg, n_train=64), progress=False, evaluate=False,
          target=small_cnn(1), aux=small_cnn(2))
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    final_lr = ck["optimizer_states"][0]["param_groups"][0]["lr"]
    if schedule == "constant":
        assert not ck["lr_schedulers"] and final_lr == cfg.lr
    else:
        assert final_lr < 0.01 * cfg.lr  # decayed to ~0 by the last of the 4 steps


def test_seeded_subset_is_deterministic():
    ds = data(50)
    assert seeded_subset(ds, 10, 3).indices == seeded_subset(ds, 10, 3).indices
    assert seeded_subset(ds, 10, 3).indices != seeded_subset(ds, 10, 4).indices


def test_checkpoint_carries_config_and_resume_continues(tmp_path):
    cfg = tiny_config()
    critics = dict(target=small_cnn(1), aux=small_cnn(2))
    out = tmp_path / "run"
    r1 = train(cfg, out, datamodule=datamodule(cfg), progress=False, **critics)
    last = out / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    assert GeneratorTrainConfig.from_dict(ck["generator_config"]) == cfg
    assert ck["global_step"] == 2  # 32 images / batch 16
    assert not any(k.startswith("_critics") or "target" in k for k in ck["state_dict"])  # generator only
    reloaded = GeneratorModule.load_from_checkpoint(last, weights_only=True, **critics)
    assert reloaded.config == cfg
    net, meta = load_generator(r1.generator_path)
    assert GeneratorTrainConfig.from_dict(meta["config"]) == cfg
    for key in ("target_accuracy", "aux_accuracy", "clean_target_accuracy", "ssim", "train_images_per_second"):
        assert meta["metrics"][key] is not None
    assert 0 <= r1.metrics["ssim"] <= 1

    # resume: two more epochs continue from step 2, not from scratch
    cfg2 = tiny_config(epochs=3)
    train(cfg2, out, datamodule=datamodule(cfg2), progress=False, **critics)
    ck2 = torch.load(last, weights_only=True)
    assert ck2["global_step"] == 6 and ck2["epoch"] == 2
    assert json.loads((out / "result.json").read_text())["config"]["epochs"] == 3

    with pytest.raises(InvalidInput, match="width"):
        train(tiny_config(width=0.25), out, datamodule=datamodule(cfg), progress=False, **critics)
    with pytest.raises(InvalidInput, match="already holds"):
        train(cfg2, out, datamodule=datamodule(cfg2), progress=False, resume=False, **critics)


def test_matrix_records_heatmaps_and_skip(tmp_path, monkeypatch):
    base = tiny_config(aux=None, critic_width=0.0625)
    monkeypatch.setattr(GeneratorDataModule, "setup", _fake_setup)
    records = matrix_mod.run_matrix(["mobilenet_v2", "resnet18"], tmp_path, base, progress=False)
    assert [(r["target"], r["aux"]) for r in records] == [
        ("mobilenet_v2", None), ("mobilenet_v2", "resnet18"), ("resnet18", None), ("resnet18", "mobilenet_v2")]
    for r in records:
        for key in ("target_accuracy", "clean_target_accuracy", "ssim"):
            assert 0 <= r[key] <= 1
        assert (r["aux_accuracy"] is None) == (r["aux"] is None)
    assert all((tmp_path / f"heatmap_{m}.png").stat().st_size > 0 for m in matrix_mod.HEATMAP_METRICS)
    saved = json.loads((tmp_path / "matrix.json").read_text())
    assert saved["summary"]["pairs"] == 2 and len(saved["records"]) == 4

    def no_training(*a, **k):
        raise AssertionError("finished pairs must be skipped")

    monkeypatch.setattr("photoveil.generator_training.train.train", no_training)
    again = matrix_mod.run_matrix(["mobilenet_v2", "resnet18"], tmp_path, base, progress=False)
    assert again == records


def _fake_setup(self, stage=None):
    self.train_set, self.val_set, self.test_set = data(16, 0), data(16, 1), data(16, 2)


def test_cli_loss_weights_reach_the_config_and_are_validated():
    from photoveil.cli import build_parser
    from photoveil.errors import InvalidInput
    from photoveil.generator_training.cli import _config

    args = build_parser().parse_args(["generator", "train", "--target", "vgg13_bn", "--aux", "resnet18", "--out", "x",
                                      "--w-target", "2", "--w-aux", "0.5", "--w-ssim", "0.1", "--crop-pad", "2"])
    cfg = _config(args, args.target, args.aux)
    assert (cfg.w_target, cfg.w_aux, cfg.w_ssim, cfg.crop_pad, cfg.augment) == (2.0, 0.5, 0.1, 2, True)
    args.w_ssim = -1.0
    with pytest.raises(InvalidInput, match="w_ssim must be >= 0"):
        _config(args, args.target, args.aux)


@pytest.mark.parametrize("size", [24, (24, 24), (24, 20)])
def test_face_critic_input_is_resized_to_the_spec(size):
    from types import SimpleNamespace

    from photoveil.generator_training.module import critic_input

    critic = SimpleNamespace(spec=SimpleNamespace(input_size=size))
    x = torch.rand(2, 3, 32, 32)
    out = critic_input(critic, x)
    assert tuple(out.shape[-2:]) == ((size, size) if isinstance(size, int) else size)
    same = torch.rand(2, 3, *out.shape[-2:])
    assert critic_input(critic, same) is same


@pytest.mark.parametrize("template", ["target", "arcface"])
def test_aux_reads_faces_as_the_evaluation_does(template):
    """``face_template="target"``: faces come aligned for the target, and the aux reads each
    one re-aligned onto its own template, differentiably (what evaluate's unauthorized
    recognizers read); ``"arcface"`` (the older runs): resized only."""
    from types import SimpleNamespace

    from photoveil.facemodels.align import realign
    from photoveil.generator_training.module import aux_input, critic_input

    cfg = GeneratorTrainConfig(task="face", dataset="lfw", target="faceapi-resnet34", aux="mobileface",
                               in_channels=3, image_size=150, face_template=template)
    aux = SimpleNamespace(spec=SimpleNamespace(input_size=(112, 112)))
    x = torch.rand(3, 3, 150, 150, requires_grad=True)
    out = aux_input(cfg, aux, x)
    assert out.shape == (3, 3, 112, 112)
    resized = critic_input(aux, x)
    if template == "arcface":
        assert torch.equal(out, resized)
        return
    assert torch.allclose(out, realign(x.detach(), "faceapi-resnet34", "mobileface", 112))
    assert (out - resized).abs().mean() > 0.05  # another crop, not the chip resized
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_face_template_is_validated_and_older_configs_read_as_arcface():
    from photoveil.cli import build_parser
    from photoveil.generator_training.cli import _config

    assert GeneratorTrainConfig().face_template == "target"
    old = {k: v for k, v in GeneratorTrainConfig(face_template="target").to_dict().items() if k != "face_template"}
    assert GeneratorTrainConfig.from_dict(old).face_template == "arcface"
    cfg = GeneratorTrainConfig(face_template="target")
    assert GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="face_template must be one of"):
        GeneratorTrainConfig(face_template="dlib")
    args = build_parser().parse_args(["generator", "train", "--dataset", "lfw", "--target", "faceapi-resnet34",
                                      "--out", "x", "--face-template", "arcface"])
    assert _config(args, args.target, args.aux).face_template == "arcface"


def test_aux_rescale_reaches_only_the_training_aux():
    """aux_rescale: in training the aux sees a resampled x' (the target does not); eval is untouched."""
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.seen = small_cnn(2), []

        def forward(self, x):
            self.seen.append(x.detach().clone())
            return self.net(x)

    target, aux = Recorder(), Recorder()
    module = GeneratorModule(tiny_config(aux_rescale=0.9), target=target, aux=aux)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    torch.manual_seed(0)
    _, x_prot = module.compute_loss(x, y, diversify=True)
    assert torch.equal(target.seen[-1], x_prot.detach()) and not torch.allclose(aux.seen[-1], x_prot.detach())
    assert aux.seen[-1].shape == x_prot.shape
    _, x_prot = module.compute_loss(x, y)
    assert torch.equal(aux.seen[-1], x_prot.detach())


@pytest.mark.parametrize("name", ["w_target_centred", "w_target_rank"])
def test_target_embedding_weights_validate_and_reach_the_cli(name):
    from photoveil.cli import build_parser
    from photoveil.generator_training.cli import _config

    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        tiny_config(task="face", dataset="lfw", in_channels=3, image_size=24, **{name: -1})
    with pytest.raises(ValueError, match=f"{name} needs the face task"):
        tiny_config(**{name: 1.0})
    flag = "--" + name.replace("_", "-")
    args = build_parser().parse_args(["generator", "train", "--dataset", "lfw", "--target", "faceapi-resnet34",
                                      "--aux", "mobileface", "--out", "x", flag, "12"])
    assert getattr(_config(args, args.target, args.aux), name) == 12.0
    assert getattr(build_parser().parse_args(["generator", "train", "--target", "a", "--out", "x"]), name) == 0.0


def test_ranking_term_scores_the_gallery_match_and_skips_the_same_identity():
    F = torch.nn.functional
    clean = F.normalize(torch.randn(8, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])          # faces 0 and 7: the same person
    ce, top1 = ranking_term(clean, clean, labels)
    assert top1 == 1.0 and ce < 0.05
    swapped = clean[[1, 0, 2, 3, 4, 5, 6, 7]]                 # 0 and 1 now look like each other
    ce_swapped, top1_swapped = ranking_term(swapped, clean, labels)
    assert top1_swapped == pytest.approx(6 / 8) and ce_swapped > ce + 1.0
    like_sibling = clean[[7, 1, 2, 3, 4, 5, 6, 0]]            # like another photo of the same person
    _, top1_sibling = ranking_term(like_sibling, clean, labels)
    assert top1_sibling == 1.0  # not a wrong match: the sibling column is no negative
    x = torch.rand(8, 3, 16, 16)
    mu = clean.mean(0)
    base = face_loss(x, x, clean, swapped, None, None, w_ssim=0.0, target_mean=mu)
    ranked = face_loss(x, x, clean, swapped, None, None, w_ssim=0.0, target_mean=mu, labels=labels, w_target_rank=3.0)
    assert "target_rank_ce" not in base
    assert ranked["loss"] == pytest.approx(base["loss"] + 3.0 * ranked["target_rank_ce"], abs=1e-5)
    assert ranked["target_rank_top1"] == pytest.approx(6 / 8)


def test_rank_bank_adds_negatives_of_other_people_only():
    F = torch.nn.functional
    g = torch.Generator().manual_seed(1)
    clean = F.normalize(torch.randn(4, 32, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 3])
    prot = F.normalize(clean + 0.3 * torch.randn(4, 32, generator=g), dim=1)
    ce, top1 = ranking_term(prot, clean, labels)
    # a banked person who looks like protected face 0: a wrong match the batch alone cannot see
    intruder = prot[:1]
    ce_bank, top1_bank = ranking_term(prot, clean, labels, intruder, torch.tensor([9]))
    assert top1 == 1.0 and top1_bank == pytest.approx(3 / 4) and ce_bank > ce + 0.5
    # the same embedding filed under face 0's own identity (another photo of them) is no negative
    ce_own, top1_own = ranking_term(prot, clean, labels, intruder, torch.tensor([0]))
    assert top1_own == 1.0
    assert ce_own > ce  # ...but it is a negative for the other three faces
    assert ranking_term(prot, clean, labels, clean[:0], labels[:0]) == (ce, top1)  # an empty bank changes nothing


def test_rank_bank_is_a_fifo_of_training_batches_used_in_training_only():
    size = 24
    torch.manual_seed(0)
    cfg = dict(task="face", dataset="lfw", in_channels=3, image_size=24, target="a", aux=None, w_target_rank=1.0)
    module = GeneratorModule(tiny_config(rank_bank=10, **cfg), target=OffsetStandIn(1, size))
    module.train()
    batches = [(torch.rand(4, 3, size, size), torch.arange(4) + 4 * i) for i in range(4)]
    module.compute_loss(*batches[0])
    assert module.rank_bank[0].shape == (4, 16) and module.rank_bank[1].tolist() == [0, 1, 2, 3]
    for x, y in batches[1:]:
        module.compute_loss(x, y)
    assert module.rank_bank[0].shape == (10, 16)                 # the last 10 faces, oldest dropped
    assert module.rank_bank[1].tolist() == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    emb = torch.nn.functional.normalize(module.critic("target")(batches[-1][0]), dim=1)
    assert torch.allclose(module.rank_bank[0][-4:], emb, atol=1e-6)
    # the banked people are negatives in training: the same batch ranks worse than without a bank
    plain = GeneratorModule(tiny_config(**cfg), target=OffsetStandIn(1, size))
    plain.generator.load_state_dict(module.generator.state_dict())
    plain.target_mean = module.target_mean.clone()  # the same mean face: only the bank differs
    plain.train()
    assert module.compute_loss(*batches[0])[0]["target_rank_ce"] > plain.compute_loss(*batches[0])[0]["target_rank_ce"]
    # eval (validation) neither reads nor fills it: the logged ranking stays the batch's own
    module.eval()
    plain.eval()
    before = module.rank_bank[1].clone()
    assert module.compute_loss(*batches[0])[0]["target_rank_ce"] == pytest.approx(
        plain.compute_loss(*batches[0])[0]["target_rank_ce"].item())
    assert torch.equal(module.rank_bank[1], before)


def test_rank_bank_validates_and_reaches_the_cli():
    from photoveil.cli import build_parser
    from photoveil.generator_training.cli import _config

    face = dict(task="face", dataset="lfw", in_channels=3, image_size=24)
    with pytest.raises(ValueError, match=r"rank_bank must be in \[0, 65536\]"):
        tiny_config(rank_bank=-1, w_target_rank=1.0, **face)
    with pytest.raises(ValueError, match="rank_bank needs the ranking term"):
        tiny_config(rank_bank=64, **face)
    args = build_parser().parse_args(["generator", "train", "--dataset", "lfw", "--target", "faceapi-resnet34",
                                      "--aux", "mobileface", "--out", "x", "--w-target-rank", "50",
                                      "--rank-bank", "256"])
    assert _config(args, args.target, args.aux).rank_bank == 256
    assert GeneratorTrainConfig.from_dict({k: v for k, v in tiny_config().to_dict().items()
                                           if k != "rank_bank"}).rank_bank == 0  # older checkpoints


def test_ranking_term_is_trained_on_the_batch_labels():
    x = torch.rand(8, 3, 24, 24)
    y = torch.arange(8)
    final = {}
    for w in (0.0, 5.0):
        torch.manual_seed(0)
        module = GeneratorModule(tiny_config(task="face", dataset="lfw", in_channels=3, image_size=24, target="a",
                                             aux=None, w_target=0.0, w_target_rank=w, w_ssim=1.0),
                                 target=OffsetStandIn(1, 24))
        final[w] = _after_steps(module, x, y)["target_rank_ce"].item()
    assert final[5.0] < final[0.0] - 0.1, final


def test_link_term_reads_whether_one_persons_faces_find_each_other():
    from photoveil.generator_training.losses import link_term

    e = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    linked = e[[0, 0, 1, 1, 2, 2]]                          # each person's two faces coincide
    link, top1 = link_term(linked, labels)
    assert top1 == 1.0 and link > 0.75                        # the most a pair can have: 1 - 1 / 5
    unlinked = e[[0, 1, 1, 2, 2, 0]]                         # each face looks like another person
    link_u, top1_u = link_term(unlinked, labels)
    assert top1_u == 0.0 and link_u < 0.1 * link
    assert link_term(linked, torch.arange(6))[0] == 0         # no pairs: nothing to link


def test_pair_batches_hold_two_photos_of_each_person():
    from photoveil.generator_training.datamodule import PairBatchSampler, labels_of

    labels = [0] * 5 + [1] * 2 + [2] * 3 + [3] * 2 + [4] + [5] * 4  # person 4: one photo, never used
    sampler = PairBatchSampler(labels, batch_size=4, seed=3)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 5                          # ceil(17 / 4): an epoch as shuffling
    for batch in epoch:
        people = [labels[i] for i in batch]
        assert len(batch) == 4 and len(set(batch)) == 4
        assert people[0] == people[1] != people[2] == people[3] and 4 not in people
    assert epoch != list(sampler)                                   # the next epoch is another order
    five = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    for seed in range(20):                                          # 5 people, 3 a batch: batches straddle passes
        for batch in PairBatchSampler(five, batch_size=6, seed=seed):
            people = [five[i] for i in batch[0::2]]
            assert len(set(people)) == 3                            # every person at most once a batch
    assert epoch == list(PairBatchSampler(labels, batch_size=4, seed=3))  # seeded
    with pytest.raises(ValueError, match="even and >= 4"):
        PairBatchSampler(labels, batch_size=5)
    with pytest.raises(ValueError, match="need 4 people with >= 2 photos, the training set has 1"):
        PairBatchSampler([0, 0, 1], batch_size=8)
    ds = TensorDataset(torch.zeros(6, 1), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert labels_of(torch.utils.data.Subset(ds, [5, 0, 2])) == [2, 0, 1]


def test_link_term_validates_and_reaches_the_cli():
    face = dict(task="face", dataset="lfw", in_channels=3, image_size=24)
    with pytest.raises(ValueError, match="w_link needs task 'face' and an aux"):
        tiny_config(w_link=1.0, aux=None, **face)
    with pytest.raises(ValueError, match="w_link needs an even batch_size >= 4"):
        tiny_config(w_link=1.0, batch_size=7, **face)
    with pytest.raises(ValueError, match="w_link must be >= 0"):
        tiny_config(w_link=-1.0, **face)
    from photoveil.cli import build_parser
    from photoveil.generator_training.cli import _config

    args = build_parser().parse_args(["generator", "train", "--dataset", "lfw", "--target", "faceapi-resnet34",
                                      "--aux", "mobileface", "--out", "x", "--w-link", "4"])
    assert _config(args, args.target, args.aux).w_link == 4
    assert GeneratorTrainConfig.from_dict({k: v for k, v in tiny_config().to_dict().items()
                                           if k != "w_link"}).w_link == 0  # older checkpoints
    dm = datamodule(tiny_config(w_link=1.0, batch_size=8, **face))       # the loader switches to pair batches
    dm.setup("fit")
    _, labels = next(iter(dm.train_dataloader()))
    assert (labels[0::2] == labels[1::2]).all()
