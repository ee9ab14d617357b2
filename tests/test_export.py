"""Lowering to .pte (XNNPACK): eager vs program agreement, delegation, manifests, the
backward rewrites of the step programs. Small stand-in networks keep it fast; the real
face-api ResNet-34 programs run when the face models are pulled (``models`` marker)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from photoveil.client.protect.fmd import FMDConfig, FMDPrepare, GalleryClassifier
from photoveil.client.protect.pmt import PMTConfig, PMTProtector
from photoveil.client.protect.shallow import ShallowModel
from photoveil.client.runtime import PteProgram
from photoveil.errors import IntegrityError, InvalidInput
from photoveil.export import gradients as G
from photoveil.export import programs as P
from photoveil.export.explain import explain
from photoveil.artifact import FORMAT, MANIFEST_FILE, sha256_file
from photoveil.export.lowering import XNNPACK_BACKEND, LowerOptions, export_program, lower

from tests.toys import face_front as toy_shallow
from tests.toys import gallery_classifier as toy_gallery

aten = torch.ops.aten




def run(buffer: bytes, *inputs, entry: str = "forward"):
    from executorch.runtime import Runtime

    prog = Runtime.get().load_program(buffer)
    return prog.load_method(entry).execute(list(inputs))


def sign_agreement(a, b, ref):
    return ((a - ref).sign() == (b - ref).sign()).float().mean().item()


# -- manifests and plain forward programs ------------------------------------------------

def test_shallow_forward_pte_matches_eager_and_manifest_hash(tmp_path):
    mod = P.UploadFeatures(toy_shallow()).eval()
    x = torch.rand(2, 3, 40, 40)
    opts = LowerOptions(kind="shallow", model_id="toy", split="block1", input_names=["image"])
    art = export_program(mod, (x,), opts, tmp_path / "shallow")
    assert XNNPACK_BACKEND in art.lowered.delegates
    m = json.loads((tmp_path / "shallow" / MANIFEST_FILE).read_text())
    assert m["sha256"] == sha256_file(art.pte) and m["pte_bytes"] == art.pte.stat().st_size
    assert m["inputs"][0] == {"name": "image", "shape": [2, 3, 40, 40], "dtype": "float32", "layout": "NCHW"}
    assert m["kind"] == "shallow" and m["format"] == FORMAT and m["split"] == "block1" and m["photoveil_version"]
    out = PteProgram(tmp_path / "shallow")(x)[0]
    torch.testing.assert_close(out, mod(x), atol=1e-4, rtol=1e-4)


def test_nhwc_program_takes_and_gives_channels_last_and_matches_eager(tmp_path):
    mod = P.UploadFeatures(toy_shallow()).eval()
    x = torch.rand(1, 3, 40, 40)
    opts = LowerOptions(kind="shallow", model_id="toy", split="block1", input_names=["image"], layout="NHWC")
    export_program(mod, (x,), opts, tmp_path / "nhwc")
    m = json.loads((tmp_path / "nhwc" / MANIFEST_FILE).read_text())
    assert m["layout"] == "NHWC" and m["inputs"][0]["layout"] == "NHWC" and m["outputs"][0]["layout"] == "NHWC"
    out = PteProgram(tmp_path / "nhwc")(x)[0]        # an NCHW tensor is converted on the way in
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, mod(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(InvalidInput, match="layout must be one of NCHW, NHWC"):
        LowerOptions(kind="shallow", layout="NHCW")


def test_tampered_program_is_refused(tmp_path):
    mod = P.UploadFeatures(toy_shallow()).eval()
    art = export_program(mod, (torch.rand(1, 3, 24, 24),), LowerOptions(kind="shallow"), tmp_path)
    data = bytearray(art.pte.read_bytes())
    data[-1] ^= 0xFF
    art.pte.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        PteProgram(tmp_path)
    PteProgram(tmp_path, verify=False)  # explicitly unverified still loads


def test_artifact_folder_holds_one_program(tmp_path):
    mod = P.UploadFeatures(toy_shallow()).eval()
    x = (torch.rand(1, 3, 24, 24),)
    export_program(mod, x, LowerOptions(kind="shallow", program="a"), tmp_path)
    with pytest.raises(InvalidInput, match="exactly one"):
        export_program(mod, x, LowerOptions(kind="shallow", program="b"), tmp_path)


def test_generator_pte_matches_eager(tmp_path):
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(0)
    net = UNetGenerator(in_channels=3, width=0.25).eval()
    prog = P.generator_program(net, size=32, model_id="unet-test")
    art = export_program(prog.module, prog.inputs, prog.options, tmp_path)
    assert XNNPACK_BACKEND in art.lowered.delegates and not art.lowered.operators
    out = PteProgram(tmp_path)(*prog.inputs)[0]
    torch.testing.assert_close(out, prog.eager(*prog.inputs), atol=1e-4, rtol=1e-4)
    assert art.manifest.params["width"] == 0.25


@pytest.mark.slow
def test_int8_generator_smaller_and_close(tmp_path):
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(0)
    net = UNetGenerator(in_channels=3, width=0.25).eval()
    calib = [(torch.rand(1, 3, 32, 32),) for _ in range(4)]
    fp = P.generator_program(net, size=32)
    q = P.generator_program(net, size=32, quantize="int8", calibration=calib)
    a_fp = export_program(fp.module, fp.inputs, fp.options, tmp_path / "fp")
    a_q = export_program(q.module, q.inputs, q.options, tmp_path / "q")
    assert a_q.manifest.quantization == "int8" and XNNPACK_BACKEND in a_q.lowered.delegates
    assert a_q.pte.stat().st_size < 0.5 * a_fp.pte.stat().st_size
    out = PteProgram(tmp_path / "q")(*q.inputs)[0]
    ref = fp.eager(*fp.inputs)
    assert (out - ref).abs().mean() < 0.05  # int8 noise, not a different function


def test_int8_needs_calibration():
    with pytest.raises(InvalidInput, match="calibration"):
        LowerOptions(kind="generator", quantize="int8")


# -- the backward rewrites ---------------------------------------------------------------

def _input_grad(mod):
    def f(x, g):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(mod(x), x, g)[0]
    return f


@pytest.mark.parametrize("k,s,p,size", [(7, 2, 0, 40), (7, 2, 0, 41), (3, 2, 0, 27), (3, 2, 1, 16), (3, 1, 1, 12),
                                        (5, 3, 2, 19), (1, 2, 0, 9)])
def test_conv_input_grad_rewrite_is_exact(k, s, p, size):
    conv = nn.Conv2d(3, 5, k, s, p).requires_grad_(False)
    x = torch.randn(1, 3, size, size)
    g = torch.randn_like(conv(x))
    gm = make_fx(_input_grad(conv), decomposition_table=G.decompositions("fast"), tracing_mode="real")(x, g)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert aten.convolution_backward.default not in targets
    torch.testing.assert_close(gm(x, g), _input_grad(conv)(x, g), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k,s,size", [(3, 2, 27), pytest.param(3, 2, 28, marks=pytest.mark.slow),
                                      pytest.param(2, 2, 16, marks=pytest.mark.slow),
                                      pytest.param(3, 1, 9, marks=pytest.mark.slow),
                                      pytest.param(5, 2, 11, marks=pytest.mark.slow)])
def test_maxpool_backward_rewrites_match_pytorch(k, s, size):
    pool = nn.MaxPool2d(k, s)
    x = torch.randn(1, 4, size, size)  # continuous values: no ties inside a window
    g = torch.randn_like(pool(x))
    ref = _input_grad(pool)(x, g)
    for mode in G.MODES:
        gm = G.trace_step(_input_grad(pool), (x, g), mode=mode)
        torch.testing.assert_close(gm(x, g), ref, atol=1e-6, rtol=1e-6)
    gm = G.trace_step(_input_grad(pool), (x, g), mode="fast")
    low = lower(gm, (x, g), LowerOptions(kind="test"))
    assert not low.operators, f"left outside XNNPACK: {low.operators}"
    torch.testing.assert_close(run(low.buffer, x, g)[0], ref, atol=1e-5, rtol=1e-5)


def test_padded_residual_backward_runs_and_matches():
    """face-api down blocks pad the conv path / channels; the pad's backward is a crop."""
    class Down(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 8, 3, 2)

        def forward(self, x):
            out = self.c(x)
            pooled = nn.functional.avg_pool2d(x, 2, 2)
            out = nn.functional.pad(out, (0, pooled.shape[-1] - out.shape[-1], 0, pooled.shape[-2] - out.shape[-2]))
            return torch.relu(nn.functional.pad(pooled, (0, 0, 0, 0, 0, 4)) + out)

    mod = Down().requires_grad_(False)
    x = torch.randn(1, 4, 15, 15)
    g = torch.randn_like(mod(x))
    gm = G.trace_step(_input_grad(mod), (x, g))
    low = lower(gm, (x, g), LowerOptions(kind="test"))
    torch.testing.assert_close(run(low.buffer, x, g)[0], _input_grad(mod)(x, g), atol=1e-5, rtol=1e-5)


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="fast"):
        G.decompositions("approx")


# -- step programs -------------------------------------------------------------------------

def test_pmt_step_pte_matches_eager_and_is_one_delegate():
    prot = PMTProtector(toy_shallow(), PMTConfig(seed=0))
    prog = P.pmt_step_program(prot.models, PMTConfig(seed=0), size=48)
    low = lower(prog.module, prog.inputs, prog.options)
    assert low.delegates == [XNNPACK_BACKEND] * len(low.delegates) and len(low.delegates) >= 1
    # everything of the forward step (fwd, backward, smoothing, sign, clamp) is delegated
    # (a copy of a 0-d scalar constant's dim order is the only thing left outside)
    step_ops = {k: v for k, v in low.operators.items() if "dim_order" not in k}
    assert not step_ops, f"left outside XNNPACK: {step_ops}"
    x_t, x = prog.inputs[0], prog.inputs[2]
    ref, ref_m, ref_loss = prog.eager(*prog.inputs)
    out, m, loss = run(low.buffer, *prog.inputs)
    assert sign_agreement(out, ref, x_t) == 1.0
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m, ref_m, atol=1e-6, rtol=1e-3)
    feats = run(low.buffer, x, entry="features")[0]
    torch.testing.assert_close(feats, prot.models[0](x)[-1], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_pmt_step_multi_layer_and_affine_traces_correctly():
    """Aggregation (avg-pool + several taps) and the affine augmentation: traced graph = eager."""
    torch.manual_seed(0)
    segs = [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())]
    model = ShallowModel(segs, "toy2", ["a", "b"])
    cfg = PMTConfig(seed=0, augment="mix", pool=2)
    prot = PMTProtector(model, cfg)
    prog = P.pmt_step_program([model], cfg, size=24, with_features=False)
    ref = prog.eager(*prog.inputs)[0]
    assert sign_agreement(prog.module(*prog.inputs)[0], ref, prog.inputs[0]) == 1.0
    out = run(lower(prog.module, prog.inputs, prog.options).buffer, *prog.inputs)[0]
    assert sign_agreement(out, ref, prog.inputs[0]) > 0.99
    assert prot.config.pool == 2




def test_fast_pmt_program_clean_match_momentum_and_three_steps_per_call_match_eager():
    """The issue-21 program shape: E_c(x) from the ``reference`` entry point, momentum state
    carried, 3 steps per call: .pte = eager (and nothing of the step outside XNNPACK)."""
    cfg = PMTConfig(seed=0, optimizer="momentum", match="clean", schedule="cosine", steps=6, steps_per_call=3,
                    highpass=1.5)
    prog = P.pmt_step_program([toy_shallow()], cfg, size=40)
    assert prog.options.input_names[:3] == ["x_t", "m", "ref_toy_block1"] and "reference" in prog.options.entry_points
    low = lower(prog.module, prog.inputs, prog.options)
    step_ops = {k: v for k, v in low.operators.items() if "dim_order" not in k}
    assert not step_ops, f"left outside XNNPACK: {step_ops}"
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    (ref,) = run(low.buffer, x, entry="reference")
    torch.testing.assert_close(ref, toy_shallow()(x)[-1], atol=1e-4, rtol=1e-4)
    inputs = (prog.inputs[0], prog.inputs[1], ref, *prog.inputs[3:])
    want = prog.eager(*inputs)
    got = run(low.buffer, *inputs)
    assert sign_agreement(got[0], want[0], inputs[0]) > 0.999
    torch.testing.assert_close(got[2], want[2], atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("cfg", [FMDConfig(seed=0, lam=1.0, feature_loss="mse"),           # the paper's step
                                 FMDConfig(seed=0, lam_emb=1.0, feature_loss="nmse", mu=0.5, diversity=0.1)],
                         ids=["paper", "transfer"])
def test_fmd_step_pte_matches_eager(cfg):
    prog = P.fmd_step_program(toy_gallery(), cfg, size=40, model_id="toy")
    low = lower(prog.module, prog.inputs, prog.options)
    assert XNNPACK_BACKEND in low.delegates
    ref_x, ref_m = prog.eager(*prog.inputs)
    out, m = run(low.buffer, *prog.inputs)[:2]
    assert sign_agreement(out, ref_x, prog.inputs[0]) > 0.999
    assert (m.sign() == ref_m.sign()).float().mean() > 0.999  # the momentum buffer the host carries
    x = prog.inputs[2]
    eps = prog.meta["protector"].step.eps
    assert (out - x).abs().max() <= eps + 1e-6
    logits, feat, emb = run(low.buffer, x, entry="prepare")[:3]
    ref_logits, ref_feat, ref_emb = FMDPrepare(toy_gallery())(x)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(emb, ref_emb, atol=1e-4, rtol=1e-4)


def test_explain_lists_operators_outside_the_delegate():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x).cumsum(1)  # cumsum: no XNNPACK

    rep = explain(M(), (torch.rand(1, 3, 8, 8),))
    assert any("cumsum" in op for op in rep.outside)
    assert rep.delegated_nodes >= 1
    assert "cumsum" in rep.table()


# -- the real authorized model (face-api ResNet-34) ----------------------------------------

@pytest.fixture(scope="module")
def faceapi():
    from photoveil.errors import ModelsMissing
    from photoveil.facemodels import registry

    try:
        return registry.load("faceapi-resnet34")
    except ModelsMissing as exc:
        pytest.skip(str(exc))


@pytest.mark.models
@pytest.mark.slow
def test_faceapi_pmt_step_gradients_match_eager(faceapi):
    """DESIGN.md: always test .pte gradients against eager — signs identical."""
    prog = P.pmt_step_program(faceapi, PMTConfig(seed=0), size=64, with_features=False)
    low = lower(prog.module, prog.inputs, prog.options)
    assert not low.operators or set(low.operators) <= {"dim_order_ops::_to_dim_order_copy.out"}
    ref = prog.eager(*prog.inputs)[0]
    out = run(low.buffer, *prog.inputs)[0]
    assert sign_agreement(out, ref, prog.inputs[0]) == 1.0


@pytest.mark.models
def test_faceapi_pmt_step_uploads_at_its_upload_point(faceapi):
    prog = P.pmt_step_program(faceapi, PMTConfig(seed=0, upload="pool"), size=64)
    assert prog.options.split == "pool" and prog.options.extra["match_split"] == "block2"
    feats = prog.options.entry_points["features"][0](prog.inputs[2])
    with torch.no_grad():
        assert feats.shape == faceapi.split("pool")[0](prog.inputs[2]).shape


@pytest.mark.models
def test_high_preset_uploads_stem_features_of_the_obfuscated_image(faceapi):
    prot = PMTProtector.from_preset("high", faceapi, steps=1, seed=0)
    assert prot.models[0].points[-1] == faceapi.spec.deep_split != faceapi.spec.default_split
    x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    x_t = prot.protect(x)
    with torch.no_grad():
        torch.testing.assert_close(prot.features_of(x_t), faceapi.split("stem")[0](x_t))


@pytest.mark.models
def test_faceapi_shallow_forward(faceapi, tmp_path):
    prog = P.shallow_program(faceapi, size=64)
    art = export_program(prog.module, prog.inputs, prog.options, tmp_path)
    assert art.manifest.split == faceapi.spec.default_split and art.manifest.model_id == "faceapi-resnet34"
    torch.testing.assert_close(PteProgram(tmp_path)(*prog.inputs)[0], prog.eager(*prog.inputs), atol=1e-3, rtol=1e-4)
