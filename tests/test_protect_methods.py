"""PMT / MR-PMT / FMD on small stand-in networks: enhancements, presets, outputs, bounds."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from photoveil.client.protect import get_protector
from photoveil.client.protect.fmd import PAPER, FMDConfig, FMDPrepare, FMDProtector, FMDStep, GalleryClassifier, LayerTap
from photoveil.client.protect.ops import ti_kernel
from photoveil.client.protect.pmt import PMTConfig, PMTProtector
from photoveil.client.protect.shallow import ShallowModel
from photoveil.errors import InvalidInput
from tests.toys import classifier as toy_classifier
from tests.toys import gallery_classifier as toy_gallery
from tests.toys import two_taps as toy_shallow




@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))


def feature_gap(model: ShallowModel, a: torch.Tensor, b: torch.Tensor) -> float:
    with torch.no_grad():
        fa, fb = model(a)[-1], model(b)[-1]
    return ((fa - fb).pow(2).mean() / fb.pow(2).mean()).item()


def only_split(model: ShallowModel) -> ShallowModel:
    """The same network with the last tap only (no multi-layer aggregation)."""
    return ShallowModel([nn.Sequential(*model.segments)], model.name, [model.points[-1]])


def test_registry_finds_methods():
    assert get_protector("pmt") is PMTProtector
    assert get_protector("fmd") is FMDProtector


@pytest.mark.parametrize("bad", [dict(steps=0), dict(step_size=0), dict(init="zeros"), dict(augment="cutout"),
                                 dict(kernel="box"), dict(kernel_length=0), dict(pool=9), dict(init_sigma=300),
                                 dict(optimizer="adamw"), dict(momentum=1.0), dict(schedule="step"),
                                 dict(final_step=1.5), dict(match="x"), dict(stop_loss=-1), dict(steps_per_call=0),
                                 dict(highpass=-1), dict(highpass=17)])
def test_pmt_config_rejects_out_of_range(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        PMTConfig(**bad)


@pytest.mark.parametrize("bad", [dict(eps=0), dict(alpha=-1), dict(steps=0), dict(lam=-0.5), dict(lam_emb=-1.0),
                                 dict(feature_loss="l1"), dict(mu=1.0), dict(alpha_schedule="step"),
                                 dict(diversity=0.5), dict(kernel="box"), dict(kernel_length=0),
                                 dict(update="linf")])
def test_fmd_config_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FMDConfig(**bad)


def test_preset_then_flags_override():
    p = PMTProtector.from_preset("high", toy_shallow(), steps=7)
    assert p.config.steps == 7  # explicit flag wins
    assert p.config.init_sigma == PMTProtector.PRESETS["high"]["init_sigma"]  # rest from the preset
    with pytest.raises(ValueError, match="presets"):
        PMTProtector.from_preset("ultra", toy_shallow())


def test_pmt_moves_features_towards_original_and_stays_noise(images):
    model = only_split(toy_shallow())
    p = PMTProtector(model, PMTConfig(seed=0, steps=60, step_size=1.0, augment="none", kernel="none"))
    x0 = p.initial(images, p.make_rng())
    out = p.protect(images)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert feature_gap(model, out, images) < 0.7 * feature_gap(model, x0, images)
    # the obfuscated image is still far from the photo in pixel space
    assert (out - images).abs().mean() > 0.1


def test_same_seed_same_output_and_different_seed_differs(images):
    model = toy_shallow()
    a = PMTProtector(model, PMTConfig(seed=3, steps=5)).protect(images)
    b = PMTProtector(model, PMTConfig(seed=3, steps=5)).protect(images)
    c = PMTProtector(model, PMTConfig(seed=4, steps=5)).protect(images)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("change", [dict(kernel="none"), dict(kernel="linear"), dict(kernel_length=3),
                                    dict(augment="none"), dict(augment="affine"), dict(augment="mix"),
                                    dict(init="sort"), dict(init="blur"), dict(pool=1), dict(optimizer="momentum"),
                                    dict(schedule="cosine"), dict(match="clean"), dict(highpass=2.0)])
def test_each_enhancement_changes_the_result(images, change):
    model = toy_shallow()  # two taps: multi-layer aggregation on
    base = PMTProtector(model, PMTConfig(seed=0, steps=8)).protect(images)
    other = PMTProtector(model, PMTConfig(seed=0, steps=8, **change)).protect(images)
    assert not torch.allclose(base, other)


@pytest.mark.parametrize("optimizer", ["sign", "momentum"])
def test_highpass_leaves_the_coarse_structure_of_the_start_image(optimizer):
    """With ``highpass`` every update has no low-pass part, so an out-of-focus view of x~
    stays that of x~_0 (away from the clamp and the zero-padded border), while the plain
    update moves it by about a step per step."""
    from torchvision.transforms.functional import gaussian_blur

    faces = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))

    def coarse_change(highpass):
        # init_sigma small: x~ stays inside [0,1], where the clamp removes nothing
        p = PMTProtector(toy_shallow(), PMTConfig(seed=0, steps=6, step_size=1.0, init_sigma=8.0, augment="none",
                                                  optimizer=optimizer, highpass=highpass))
        x0 = p.initial(faces, p.make_rng())
        delta = gaussian_blur(p.protect(faces) - x0, [19, 19], [3.0, 3.0])[..., 14:-14, 14:-14]
        return delta.abs().mean().item() * 255

    plain, kept = coarse_change(0.0), coarse_change(2.0)
    assert plain > 1.0  # six steps of 1/255 that mostly agree in sign
    assert kept < 0.1 * plain


def test_pool_without_aggregation_is_refused():
    PMTProtector(toy_shallow(), PMTConfig(pool=4))  # two taps: aggregation on, any pool in range
    with pytest.raises(ValueError, match="acts only with layers"):
        PMTProtector(only_split(toy_shallow()), PMTConfig(pool=4))


def test_layer_aggregation_changes_the_result(images):
    model = toy_shallow()
    multi = PMTProtector(model, PMTConfig(seed=0, steps=8)).protect(images)
    single = PMTProtector(only_split(model), PMTConfig(seed=0, steps=8)).protect(images)
    assert not torch.allclose(multi, single)


def test_two_upload_outputs(images):
    model = toy_shallow()
    p = PMTProtector(model, PMTConfig(seed=0, steps=4))
    feats = p.features(images)
    with torch.no_grad():
        expected = model(p.protect(images))[-1]
    assert feats.shape == expected.shape == (3, 16, 12, 12)
    torch.testing.assert_close(feats, expected)


def test_shallower_upload_point_sends_the_obfuscated_image_features(images):
    model = toy_shallow()
    p = PMTProtector(model, PMTConfig(seed=0, steps=4, upload="a"))
    out = p.protect(images)
    with torch.no_grad():
        at_a = model(out)[0]
    assert p.features_of(out).shape == (3, 8, 12, 12)
    torch.testing.assert_close(p.features_of(out), at_a)
    # the upload point only changes what is sent, not the obfuscated image
    torch.testing.assert_close(out, PMTProtector(model, PMTConfig(seed=0, steps=4)).protect(images))
    with pytest.raises(InvalidInput, match="not a tap"):
        PMTProtector(only_split(model), PMTConfig(steps=1, upload="a")).features_of(out)


def test_upload_point_must_name_a_point_before_the_split():
    from photoveil.client.protect.pmt import check_upload
    from photoveil.facemodels.registry import get_spec

    spec = get_spec("faceapi-resnet34")
    check_upload(spec, "block2", "pool")
    check_upload(spec, "block2", "block2")
    with pytest.raises(InvalidInput, match="deeper than the split"):
        check_upload(spec, "block2", "block3")
    with pytest.raises(InvalidInput, match="named split points: stem"):
        check_upload(spec, "block2", "conv9")


def test_split_names_resolve_per_model():
    from photoveil.facemodels.registry import get_spec

    api, res, mf = get_spec("faceapi-resnet34"), get_spec("faceres"), get_spec("mobileface")
    assert api.resolve_split(None) == api.default_split and api.resolve_split("block1") == "block1"
    assert api.resolve_split("deep") == api.deep_split in api.split_points
    assert res.resolve_split("deep") == "block11"
    assert mf.deep_split is None and mf.resolve_split("deep") == mf.default_split  # none named: the default


def test_mr_pmt_serves_every_authorized_model(images):
    m1, m2 = only_split(toy_shallow(0)), only_split(toy_shallow(1))
    cfg = PMTConfig(seed=0, steps=60, step_size=1.0, augment="none", kernel="none")
    mr = PMTProtector([m1, m2], cfg)
    x0 = mr.initial(images, mr.make_rng())
    out = mr.protect(images)
    for m in (m1, m2):
        assert feature_gap(m, out, images) < 0.8 * feature_gap(m, x0, images)


def test_ti_kernels_are_normalised_and_shaped():
    for kind in ("gaussian", "linear"):
        k = ti_kernel(kind, 2, 3)
        assert k.shape == (3, 1, 5, 5)
        torch.testing.assert_close(k[0].sum(), torch.tensor(1.0))
        assert k[0, 0, 2, 2] == k[0].max()


def test_pmt_rejects_bad_images():
    p = PMTProtector(toy_shallow(), PMTConfig(steps=1))
    for bad in (torch.rand(3, 24, 24), torch.full((1, 3, 8, 8), float("nan")), torch.rand(1, 3, 8, 8) * 2,
                torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)):
        with pytest.raises(InvalidInput, match="accepted|must be"):
            p.protect(bad)




@pytest.mark.parametrize("eps", [4.0, 16.0])
def test_fmd_stays_in_eps_ball_and_keeps_authorized_prediction(images, eps):
    clf = toy_classifier()
    fmd = FMDProtector(LayerTap(clf, "1"), FMDConfig(eps=eps, alpha=eps / 4, steps=20, lam=5.0, seed=0))
    out = fmd.protect(images)
    assert (out - images).abs().max() <= eps / 255 + 1e-6
    assert 0 <= out.min() and out.max() <= 1
    with torch.no_grad():
        assert torch.equal(clf(out).argmax(1), clf(images).argmax(1))
        # the feature map moved: the distortion term did its work
        f = LayerTap(clf, "1")
        assert (f(out)[1] - f(images)[1]).abs().mean() > 0


def test_layer_tap_names_layers_on_error():
    with pytest.raises(InvalidInput, match="no layer 'conv9'"):
        LayerTap(toy_classifier(), "conv9")


def test_gallery_classifier_recognises_enrolled_identities():
    torch.manual_seed(0)
    shallow, rest = nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 16))

    class Net(nn.Module):
        def forward(self, x):
            return rest(shallow(x))

        def split(self, point):
            return shallow, rest

    gallery = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clf = GalleryClassifier.from_facenet(Net(), "x", gallery, labels)
    logits, feat = clf(gallery)
    assert logits.shape == (6, 3) and feat.shape == (6, 4, 8, 8)
    # each image's own identity is at least as close as the average identity
    assert (logits.gather(1, labels[:, None]).squeeze(1) >= logits.mean(1)).all()
    with pytest.raises(InvalidInput, match="centroids"):
        GalleryClassifier(shallow, rest, torch.rand(1, 16))


def test_step_gradient_matches_autograd_of_the_documented_loss(images):
    """PMTStep writes dJ/dz out by hand (for the exported program); it must be grad of J."""
    p = PMTProtector(toy_shallow(), PMTConfig(seed=0, steps=1, kernel="none", augment="none"))
    x_t = p.initial(images, p.make_rng())
    noise, theta = p.draws(images, p.make_rng())
    x_var = x_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(p.one_step.loss(x_var, images, noise, theta), x_var)
    alpha = torch.full((1, 1, 1, 1), 0.5 / 255)
    expected = (x_t - alpha * grad.sign()).clamp(0, 1)
    got, _, loss = p.step(x_t, torch.zeros_like(x_t), images, noise, theta, alpha)
    with torch.no_grad():  # the step's per-image loss output is J
        torch.testing.assert_close(loss.sum(), p.one_step.loss(x_t, images, noise, theta), rtol=1e-4, atol=1e-6)
    agree = (got == expected).float().mean().item()
    assert agree > 0.999, f"only {agree:.4f} of pixels take the autograd step"


# -- the optimiser and the loop (issue 21) -------------------------------------------------

def test_step_sizes_follow_the_schedule():
    assert PMTConfig(steps=4, step_size=2.0).step_sizes() == [2.0] * 4
    lin = PMTConfig(steps=5, step_size=2.0, schedule="linear", final_step=0.5).step_sizes()
    assert lin[0] == 2.0 and abs(lin[-1] - 1.0) < 1e-9 and lin == sorted(lin, reverse=True)
    cos = PMTConfig(steps=5, step_size=2.0, schedule="cosine", final_step=0.0).step_sizes()
    assert cos[0] == 2.0 and abs(cos[-1]) < 1e-9 and abs(cos[2] - 1.0) < 1e-9


def test_momentum_and_decay_reach_the_sign_loss_in_far_fewer_steps(images):
    """The old loop (signed gradient, constant 0.5, 100 steps) vs the new optimiser in 25:
    the same feature gap to the original, which 25 plain steps do not reach."""
    model = only_split(toy_shallow())
    base = dict(seed=0, init_sigma=60.0, kernel="none")

    def gap(**cfg):
        return feature_gap(model, PMTProtector(model, PMTConfig(**base, **cfg)).protect(images), images)

    old = gap(steps=100, step_size=0.5)
    new = gap(steps=25, step_size=3.5, optimizer="momentum", momentum=0.5, schedule="linear", match="clean")
    assert new <= old, f"25 momentum steps: gap {new:.4f} > 100 sign steps: {old:.4f}"
    assert gap(steps=25, step_size=0.5) > 1.5 * old  # 25 plain steps do not get there


def test_early_stop_ends_the_loop_at_the_loss(images):
    model = only_split(toy_shallow())
    cfg = dict(seed=0, steps=200, step_size=1.0, kernel="none", optimizer="momentum")
    full = PMTProtector(model, PMTConfig(**cfg))
    full.protect(images)
    target = 2 * max(full.last_run["loss"])
    early = PMTProtector(model, PMTConfig(stop_loss=target, **cfg))
    early.protect(images)
    assert early.last_run["steps"] < 200 and max(early.last_run["loss"]) <= target


def test_several_steps_per_call_equal_single_steps(images):
    model = toy_shallow()
    cfg = dict(seed=0, steps=7, optimizer="momentum", schedule="linear", match="clean", augment="mix")
    one = PMTProtector(model, PMTConfig(**cfg))
    three = PMTProtector(model, PMTConfig(steps_per_call=3, **cfg))
    a, b = one.protect(images), three.protect(images)
    assert one.last_run["calls"] == 7 and three.last_run["calls"] == 3
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_clean_match_uses_the_features_of_the_original_once(images):
    model = toy_shallow()
    p = PMTProtector(model, PMTConfig(seed=0, match="clean"))
    x_t, refs = p.start(images, p.make_rng())
    with torch.no_grad():
        want = p.one_step.taps(model, images)
    assert len(refs) == 2 and all(torch.equal(r, w) for r, w in zip(refs, want))


@pytest.mark.parametrize("loss,lam,lam_emb", [("mse", 1.0, 0.0), ("nmse", 0.0, 1.0), ("nmse", 0.5, 2.0)])
def test_fmd_step_ascends_its_loss(loss, lam, lam_emb):
    """The written-out output gradients of the step are those of ``FMDStep.loss``: with no
    momentum, smoothing or diversity the update is ``alpha * sign(grad J)``."""
    clf = toy_gallery()
    step = FMDStep(clf, eps=1.0, lam=lam, lam_emb=lam_emb, feature_loss=loss)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 24, 24, generator=g) * 0.5 + 0.25
    logits, feat_x, emb_x = FMDPrepare(clf)(x)
    y = logits.argmax(1)
    x_star = (x + (torch.rand(x.shape, generator=g) - 0.5) * 0.1).requires_grad_(True)
    (grad,) = torch.autograd.grad(step.loss(x_star, feat_x, emb_x, y), x_star)
    alpha = torch.full((1,), 0.01)
    out, m = step(x_star.detach(), torch.zeros_like(x), x, feat_x, emb_x, y, alpha)
    agree = ((out - x_star.detach()).sign() == grad.sign()).float().mean()
    assert agree > 0.999
    assert torch.equal(m.sign(), grad.sign())


def test_fmd_cosine_schedule_decays_to_an_eighth():
    p = FMDProtector(toy_gallery(), FMDConfig(alpha=8.0, steps=5, alpha_schedule="cosine"))
    a = p.alphas()
    assert len(a) == 5 and a[0] == pytest.approx(8 / 255) and a[-1] == pytest.approx(1 / 255)
    assert all(x > y for x, y in zip(a, a[1:]))
    assert FMDProtector(toy_gallery(), FMDConfig(alpha=8.0, steps=3, alpha_schedule="constant")).alphas() == [8 / 255] * 3


def _cos(clf, a, b):
    with torch.no_grad():
        return torch.nn.functional.cosine_similarity(FMDPrepare(clf)(a)[2], FMDPrepare(clf)(b)[2]).mean().item()


@pytest.mark.parametrize("diversity", [0.0, 0.1])
def test_transfer_fmd_moves_an_unauthorized_model_more_and_keeps_the_authorized_embedding(diversity):
    """On stand-in recognizers (same architecture, other weights), the transfer variant's
    embedding keep holds the authorized descriptor (cosine >= 0.99) while the paper's
    argmax-only head lets it drift, and the unauthorized descriptor moves at least as far."""
    auth, unauth = toy_gallery(0), toy_gallery(7)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    old = FMDProtector(auth, FMDConfig(**{**PAPER, "steps": 10, "seed": 0})).protect(x)
    new = FMDProtector(auth, FMDConfig(steps=10, seed=0, diversity=diversity)).protect(x)
    assert (new - x).abs().max() <= 16 / 255 + 1e-6
    assert _cos(auth, new, x) >= 0.99 and _cos(auth, new, x) > _cos(auth, old, x)
    assert _cos(unauth, new, x) <= _cos(unauth, old, x) + 0.01
