"""The .pte protectors (client/runtime.py) against the eager ones: same API, same result.

A full N-step PMT run on the program gives the same protection outcome as the eager
protector (same seed: same draws; signs of every step agree)."""
from __future__ import annotations

import pytest
import torch

from photoveil.client.protect.fmd import FMDConfig, FMDProtector
from photoveil.client.protect.generator import GeneratorConfig, GeneratorProtector
from photoveil.client.protect.pmt import PMTConfig, PMTProtector
from photoveil.client.runtime import PteFMD, PteGenerator, PtePMT, load_protector
from photoveil.errors import InvalidInput
from photoveil.export import programs as P
from photoveil.export.lowering import export_program
from tests.toys import face_front as toy_shallow
from tests.toys import gallery_classifier as toy_gallery


@pytest.fixture(scope="module")
def pmt_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("pmt")
    prog = P.pmt_step_program([toy_shallow()], PMTConfig(steps=20, step_size=1.0), size=40)
    export_program(prog.module, prog.inputs, prog.options, out)
    return out


def feature_gap(model, a, b):
    with torch.no_grad():
        fa, fb = model(a)[-1], model(b)[-1]
    return ((fa - fb).pow(2).mean() / fb.pow(2).mean()).item()


def test_pte_pmt_full_run_matches_eager(pmt_artifact):
    faces = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    # batch_size 1 like the program: the same random draws, in the same order
    eager = PMTProtector(toy_shallow(), PMTConfig(steps=20, step_size=1.0, seed=7, batch_size=1))
    pte = PtePMT(pmt_artifact, seed=7)
    assert pte.config.steps == 20 and pte.config.step_size == 1.0
    a, b = eager.protect(faces), pte.protect(faces)
    assert pte.step.calls == 2 * 20  # program batch 1: 20 steps per image
    assert (a == b).float().mean() > 0.99
    model = eager.models[0]
    x0 = eager.initial(faces, eager.make_rng())
    gap_e, gap_p = feature_gap(model, a, faces), feature_gap(model, b, faces)
    assert gap_p < 0.9 * feature_gap(model, x0, faces)  # the program did protect
    assert abs(gap_p - gap_e) < 0.02
    torch.testing.assert_close(pte.features(faces), model(b)[-1], atol=1e-4, rtol=1e-4)


def test_pte_pmt_rejects_wrong_size_and_baked_settings(pmt_artifact):
    pte = PtePMT(pmt_artifact)
    with pytest.raises(InvalidInput, match="40x40"):
        pte.protect(torch.rand(1, 3, 32, 32))
    with pytest.raises(InvalidInput, match="kernel_length"):
        PtePMT(pmt_artifact, kernel_length=3)
    assert isinstance(load_protector(pmt_artifact, steps=3), PtePMT)


@pytest.mark.slow
def test_pte_generator_matches_eager(tmp_path):
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(0)
    net = UNetGenerator(in_channels=3, width=0.25).eval()
    prog = P.generator_program(net, size=32)
    export_program(prog.module, prog.inputs, prog.options, tmp_path)
    images = torch.rand(3, 3, 32, 32)
    eager = GeneratorProtector(GeneratorConfig(), generator=net).protect(images)
    pte = PteGenerator(tmp_path)
    torch.testing.assert_close(pte.protect(images), eager, atol=1e-4, rtol=1e-4)
    with pytest.raises(InvalidInput, match="strength"):
        PteGenerator(tmp_path, config=GeneratorConfig(strength=0.5))


def test_evaluation_runs_a_generator_artifact_folder(tmp_path):
    """``evaluate --method generator --checkpoint <artifact folder>`` evaluates the program itself."""
    from photoveil.evaluation.runner import EvalConfig, build_protector
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(1)
    net = UNetGenerator(in_channels=3, width=0.25).eval()
    prog = P.generator_program(net, size=32)
    export_program(prog.module, prog.inputs, prog.options, tmp_path)
    cfg = EvalConfig(method="generator", preset="high", overrides={"checkpoint": str(tmp_path)}, progress=False)
    protector = build_protector(cfg, [], (32, 32))
    assert isinstance(protector, PteGenerator)
    images = torch.rand(2, 3, 32, 32)
    eager = GeneratorProtector(GeneratorConfig(), generator=net).protect(images)
    torch.testing.assert_close(protector.protect(images), eager, atol=1e-4, rtol=1e-4)
    # The mid preset asks for strength 0.75; the program has 1.0 baked in.
    with pytest.raises(InvalidInput, match="strength"):
        build_protector(EvalConfig(method="generator", preset="mid", overrides={"checkpoint": str(tmp_path)},
                                   progress=False), [], (32, 32))


@pytest.mark.slow
def test_pte_fmd_full_run_matches_eager(tmp_path):
    cfg = FMDConfig(steps=10, seed=1)
    prog = P.fmd_step_program(toy_gallery(), cfg, size=40)
    export_program(prog.module, prog.inputs, prog.options, tmp_path)
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    a = FMDProtector(toy_gallery(), FMDConfig(steps=10, seed=1, batch_size=1)).protect(images)
    b = PteFMD(tmp_path, steps=10, seed=1).protect(images)
    assert (b - images).abs().max() <= 16 / 255 + 1e-6
    assert (a == b).float().mean() > 0.99
