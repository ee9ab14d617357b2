"""The human-readability witness (photoveil.readability), its evaluation records and its loss term."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_msssim import ssim

from photoveil import readability as R

torch.set_num_threads(1)
FIXTURE = Path(__file__).parent / "fixtures" / "lfw_small" / "images"


def faces(n: int = 4, size: int = 96) -> torch.Tensor:
    """Fixture faces, centre crops resized to ``size`` (no model needed)."""
    from PIL import Image
    import numpy as np

    out = []
    for p in sorted(FIXTURE.glob("*/*_0001.jpg"))[:n]:
        img = Image.open(p).convert("RGB").crop((50, 50, 200, 200)).resize((size, size))
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def cast_and_lines(x: torch.Tensor) -> torch.Tensor:
    """What the shipped generator's output looks like: a green cast under fine horizontal lines."""
    cast = x * torch.tensor([0.3, 1.0, 0.4]).view(1, 3, 1, 1) + torch.tensor([0.0, 0.0, 0.3]).view(1, 3, 1, 1)
    lines = torch.zeros(1, 1, x.shape[-2], 1)
    lines[..., ::2, :], lines[..., 1::2, :] = 0.15, -0.15
    return (cast + lines).clamp(0, 1)


def test_cast_and_fine_lines_stay_readable_noise_does_not():
    x = faces()
    y = cast_and_lines(x)
    plain = ssim(x, y, data_range=1.0, size_average=False)
    assert plain.mean() < 0.3                                  # plain SSIM is fooled by the cast + lines
    assert R.readable_ssim(x, y).mean() > 0.8                   # the witness is not
    assert R.edge_similarity(x, y).mean() > 0.8
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert R.readable_ssim(x, noise).mean() < 0.15
    assert R.edge_similarity(x, noise).abs().mean() < 0.1
    assert torch.allclose(R.readable_ssim(x, x), torch.ones(len(x)), atol=1e-4)


def test_far_view_reads_a_face_under_stripes_that_hide_it_at_half_size():
    """2-px stripes (period 4) over a low-contrast face survive the 3x3 median and the half
    size, where they dominate the standardised image; at quarter size they average out and
    the face is back (what a generator trained on the half view alone learned)."""
    x = faces(4, 112)
    idx = torch.arange(112)
    stripes = torch.where((idx // 2) % 2 == 0, 0.2, -0.2).view(1, 1, 112, 1)
    y = (0.5 + 0.25 * (x - 0.5) + stripes).clamp(0, 1)
    assert R.readable_ssim(x, y).mean() < 0.15
    assert R.readable_ssim(x, y, R.FAR).mean() > 0.45
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert R.readable_ssim(x, noise, R.FAR).mean() < 0.15


def test_out_of_focus_view_reads_a_face_under_a_dither_that_the_far_view_misses():
    """A 1-px checkerboard over a dimmed face: the median keeps it, and after the
    standardisation and area down-scaling it still dominates (the far view scores it below
    another person's face, ~0.3); a Gaussian low-pass removes it and the face is back (face
    generators trained against the two down-scaled views alone hid faces from them this way)."""
    x = faces(4, 112)
    idx = torch.arange(112)
    checker = torch.where((idx.view(-1, 1) + idx.view(1, -1)) % 2 == 0, 0.5, -0.5).view(1, 1, 112, 112)
    y = (0.5 + 0.1 * (x - 0.5) + checker).clamp(0, 1)
    assert R.readable_ssim(x, y, R.FAR).mean() < 0.25
    assert R.readable_ssim(x, y, R.BLURRED).mean() > 0.9
    assert R.edge_similarity(x, y, R.BLURRED).mean() > 0.8
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert R.readable_ssim(x, noise, R.BLURRED).mean() < 0.12
    assert R.readable_ssim(x, x.roll(1, 0), R.BLURRED).mean() < 0.5   # another person's face


def test_out_of_focus_view_sees_luminance_not_a_pattern_in_a_faint_channel():
    """The face in green, faint coarse bars (+-0.02) in red and blue: per-channel
    standardisation blows the bars up to the face's variance and they hide it; in the
    luminance a person sees they are faint and the face is there."""
    x = faces(4, 112)
    bars = torch.where((torch.arange(112) // 6) % 2 == 0, 0.02, -0.02).view(1, 1, 1, 112).expand(4, 1, 112, 112)
    y = torch.cat([0.5 + bars, 0.5 + 0.5 * (x.mean(1, keepdim=True) - 0.5), 0.5 + bars], 1)
    per_channel = R.Normalisation(median=1, blur=R.BLURRED.blur, per_channel=True)
    assert R.readable_ssim(x, y, per_channel).mean() < 0.45
    assert R.readable_ssim(x, y, R.BLURRED).mean() > 0.9


def test_inverted_face_is_still_readable():
    x = faces(2)
    assert R.readable_ssim(x, 1 - x).mean() > 0.95              # max with the negative: an inverted face is a face
    assert R.edge_similarity(x, 1 - x).mean() > 0.8


def test_normalisation_shapes_and_validation():
    x = faces(2, 64)
    assert R.normalise(x).shape == (2, 1, 32, 32)
    assert R.recognizer_view(x).shape == x.shape
    assert 0 <= R.normalise(x).min() and R.normalise(x).max() <= 1
    with pytest.raises(ValueError, match="median"):
        R.Normalisation(median=2)
    with pytest.raises(ValueError, match="scale"):
        R.Normalisation(scale=0)
    with pytest.raises(ValueError, match=r"blur must be in \[0, 0.1\]"):
        R.Normalisation(blur=0.5)
    assert R.normalise(x, R.BLURRED).shape == (2, 1, 32, 32) and R.low_pass(x, 0) is x
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        R.normalise(torch.rand(2, 1, 32, 32))


def test_witness_is_differentiable():
    x = faces(2, 48)
    y = torch.rand_like(x, requires_grad=True)
    R.readability_term(x, y)["term"].backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_generator_readability_term_lowers_the_witness():
    """A toy run: with w_readable the generator learns an output the witness no longer matches."""
    from tests.test_generator_training import FaceStandIn, tiny_config

    from photoveil.generator_training.module import GeneratorModule

    torch.manual_seed(0)
    x = faces(8, 48)
    runs = {}
    for w in (0.0, 4.0):
        torch.manual_seed(0)
        cfg = tiny_config(task="face", dataset="lfw", in_channels=3, image_size=48, target="a", aux="b",
                          w_readable=w, w_ssim=0.0, lr=5e-3, width=0.25)
        module = GeneratorModule(cfg, target=FaceStandIn(1, 48), aux=FaceStandIn(2, 48))
        opt = torch.optim.AdamW(module.generator.parameters(), lr=5e-3)
        start = module.compute_loss(x, None)[0]["readable_ssim"].item()
        for _ in range(25):
            opt.zero_grad()
            module.compute_loss(x, None)[0]["loss"].backward()
            opt.step()
        runs[w] = (start, module.compute_loss(x, None)[0]["readable_ssim"].item())
    assert runs[4.0][1] < runs[4.0][0] - 0.1                   # the term lowers the witness
    assert runs[4.0][1] < runs[0.0][1]                         # more than training without it


class PatchEmbedding(torch.nn.Module):
    """A stand-in recognizer whose embedding is a linear map of the centred image: unlike a small
    ReLU CNN (whose embeddings all point along its output bias), its cosine follows the content."""

    def __init__(self, size: int):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 8, 8, stride=8, bias=False)
        self.spec = SimpleNamespace(input_size=size)

    def forward(self, x):
        return self.conv(x - 0.5).flatten(1)


def aux_trained_module(**weights):
    """A seeded 48-px face GeneratorModule with stand-in critics (aux: PatchEmbedding) whose only
    loss terms are the given readability weights."""
    from tests.test_generator_training import FaceStandIn, tiny_config

    from photoveil.generator_training.module import GeneratorModule

    torch.manual_seed(0)
    cfg = tiny_config(task="face", dataset="lfw", in_channels=3, image_size=48, target="a", aux="b",
                      w_aux=0.0, w_ssim=0.0, lr=5e-3, width=0.25, **weights)
    return GeneratorModule(cfg, target=FaceStandIn(1, 48), aux=PatchEmbedding(48))


def test_aux_term_on_the_out_of_focus_view_lowers_what_the_aux_reads_there():
    """``w_readable_aux_blur``: the aux recognizer's match on the out-of-focus view falls when the
    term is on, and stays higher when it is off (the other terms alone do not reach that view)."""
    import torch.nn.functional as F
    from tests.test_generator_training import _after_steps

    x = faces(8, 48)

    def blurred_aux_cos(module):
        aux = module.critic("aux")
        with torch.no_grad():
            return F.cosine_similarity(aux(R.recognizer_view(module.generator(x), R.BLURRED)), aux(x)).mean().item()

    final = {}
    for w in (0.0, 4.0):
        module = aux_trained_module(w_readable_aux_blur=w)
        start = blurred_aux_cos(module)
        parts = _after_steps(module, x, None, steps=25)
        assert ("readable_blur_aux_cos" in parts) == (w > 0)
        final[w] = blurred_aux_cos(module)
    assert final[4.0] < start - 0.1
    assert final[4.0] < final[0.0] - 0.1


def test_gap_term_reads_the_gallery_search_and_skips_the_same_identity():
    from photoveil.generator_training.losses import gap_term

    clean = torch.nn.functional.normalize(torch.randn(6, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])                 # faces 0 and 5: the same person
    gap, top1 = gap_term(clean, clean, labels)                 # the protected face is its clean face
    assert top1 == 1.0 and gap > 0.8
    shuffled = clean[[1, 2, 3, 4, 0, 5]]                       # faces 0-4 look like someone else
    gap_s, top1_s = gap_term(shuffled, clean, labels)
    assert top1_s == pytest.approx(1 / 6) and gap_s < 0.25 * gap
    sibling = clean[[5, 1, 2, 3, 4, 0]]                        # like another photo of the same person
    gap_b, top1_b = gap_term(sibling, clean, labels)
    assert top1_b == pytest.approx(4 / 6)                      # neither is counted as found, nor as wrong
    assert gap_b < gap
    one_person = gap_term(clean, clean, torch.zeros(6, dtype=torch.long))
    assert one_person[0] == 0 and one_person[1] == 0           # no other people: nothing to compare


def test_aux_gap_term_is_trained_in_both_views_on_the_batch_labels():
    """``w_readable_aux_gap``: after training with it the aux's gallery gap in the median and
    out-of-focus views is lower than after training without it; with no labels (evaluation)
    the term is left out."""
    from tests.test_generator_training import _after_steps

    from photoveil.generator_training.losses import gap_term

    x, y = faces(8, 48), torch.arange(8)

    def gaps(module):
        aux = module.critic("aux")
        with torch.no_grad():
            prot, clean = module.generator(x), aux(x)
            return [gap_term(aux(R.recognizer_view(prot, v)), clean, y)[0].item() for v in (R.DEFAULT, R.BLURRED)]

    final = {}
    for w in (0.0, 8.0):
        module = aux_trained_module(w_readable_aux_gap=w)
        start = gaps(module)
        parts = _after_steps(module, x, y, steps=25)
        assert ("readable_blur_aux_gap" in parts) == ("readable_aux_top1" in parts) == (w > 0)
        final[w] = gaps(module)
    assert "readable_blur_aux_gap" not in module.compute_loss(x, None)[0]
    for view in (0, 1):
        assert final[8.0][view] < 0.5 * start[view] and final[8.0][view] < 0.5 * final[0.0][view], (start, final)


def test_config_readability_fields_validate_and_reach_the_cli():
    from photoveil.cli import build_parser
    from photoveil.generator_training.cli import _config
    from photoveil.generator_training.config import GeneratorTrainConfig

    with pytest.raises(ValueError, match="w_readable must be >= 0"):
        GeneratorTrainConfig(w_readable=-1)
    with pytest.raises(ValueError, match="RGB"):
        GeneratorTrainConfig(w_readable=1.0, in_channels=1)
    with pytest.raises(ValueError, match="w_readable_blur must be >= 0"):
        GeneratorTrainConfig(w_readable_blur=-1)
    with pytest.raises(ValueError, match="w_readable_blur needs image_size >= 22"):
        GeneratorTrainConfig(task="face", in_channels=3, image_size=16, w_readable_blur=1.0)
    with pytest.raises(ValueError, match="aux recognizer"):
        GeneratorTrainConfig(task="face", in_channels=3, image_size=112, aux=None, w_readable_aux=1.0)
    with pytest.raises(ValueError, match="quarter size"):
        GeneratorTrainConfig(task="face", in_channels=3, image_size=32, w_readable_far=1.0)
    with pytest.raises(ValueError, match="w_readable_aux_blur must be >= 0"):
        GeneratorTrainConfig(w_readable_aux_blur=-1)
    with pytest.raises(ValueError, match="w_readable_aux_blur needs task 'face' and an aux recognizer"):
        GeneratorTrainConfig(task="face", in_channels=3, image_size=112, aux=None, w_readable_aux_blur=1.0)
    with pytest.raises(ValueError, match="w_readable_aux_gap must be >= 0"):
        GeneratorTrainConfig(w_readable_aux_gap=-1)
    with pytest.raises(ValueError, match="w_readable_aux_gap needs task 'face' and an aux recognizer"):
        GeneratorTrainConfig(task="face", in_channels=3, image_size=112, aux=None, w_readable_aux_gap=1.0)
    args = build_parser().parse_args(["generator", "train", "--dataset", "lfw", "--target", "faceapi-resnet34",
                                      "--aux", "mobileface", "--out", "x", "--w-readable", "1.5",
                                      "--w-readable-aux", "0.5", "--w-readable-far", "2", "--w-readable-blur", "3",
                                      "--w-readable-aux-blur", "2.5", "--w-readable-aux-gap", "6",
                                      "--init-from", "face"])
    cfg = _config(args, args.target, args.aux)
    assert (cfg.w_readable, cfg.w_readable_aux, cfg.w_readable_far, cfg.w_readable_blur, cfg.w_readable_aux_blur,
            cfg.w_readable_aux_gap, cfg.init_from) == (1.5, 0.5, 2.0, 3.0, 2.5, 6.0, "face")
    assert GeneratorTrainConfig.from_dict(cfg.to_dict()) == cfg
    defaults = build_parser().parse_args(["generator", "train", "--target", "a", "--out", "x"])
    assert (defaults.w_readable, defaults.w_readable_aux, defaults.w_readable_aux_gap) == (
        GeneratorTrainConfig.w_readable, GeneratorTrainConfig.w_readable_aux, GeneratorTrainConfig.w_readable_aux_gap)


def test_init_from_copies_weights_and_rejects_a_mismatch(tmp_path):
    from photoveil.errors import InvalidInput
    from photoveil.generator_training.module import load_initial_weights
    from photoveil.nets.unet import UNetGenerator, save_generator

    src = UNetGenerator(in_channels=3, width=0.125, depth=2)
    save_generator(tmp_path / "g.pt", src)
    dst = UNetGenerator(in_channels=3, width=0.125, depth=2)
    load_initial_weights(dst, str(tmp_path / "g.pt"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(InvalidInput, match="U-Net"):
        load_initial_weights(UNetGenerator(in_channels=3, width=0.25, depth=2), str(tmp_path / "g.pt"))


def test_link_term_is_trained_on_pairs_of_one_persons_photos():
    """``w_link``: after training with it the aux links the protected photos of one person less
    than after training without it; with no labels (evaluation) it is not computed."""
    from tests.test_generator_training import _after_steps

    g = torch.Generator().manual_seed(0)
    x = (faces(4, 48).repeat_interleave(2, 0) + 0.03 * torch.randn(8, 3, 48, 48, generator=g)).clamp(0, 1)
    y = torch.arange(4).repeat_interleave(2)                      # 4 people x 2 photos
    final = {}
    for w in (0.0, 8.0):
        module = aux_trained_module(w_link=w)
        start = module.compute_loss(x, y)[0]["link"].item()
        final[w] = _after_steps(module, x, y, steps=25)["link"].item()
    assert start > 0.1 and final[8.0] < 0.5 * start and final[8.0] < 0.5 * final[0.0], (start, final)
    assert "link" not in module.compute_loss(x, None)[0]
