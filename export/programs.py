"""The on-device programs of the three methods, ready for :func:`lowering.export_program`.

Each builder returns a :class:`Program`: the module to lower (for the step programs, the
autograd-free graph of :func:`gradients.trace_step`), example inputs (batch 1 unless told),
the :class:`~photoveil.export.lowering.LowerOptions` that name it in the manifest, and the
eager reference the bench and the tests compare against.

* ``generator``: ``x -> clamp(x + strength * U(x), 0, 1)`` (one U-Net pass);
* ``shallow``: ``x -> E_c(x)``, the features uploaded in the upload-features case;
* ``pmt-step``: ``(x_t, m, *refs, noise, theta, alpha) -> (x_t_next, m_next, loss)``,
  ``steps_per_call`` PMT iterations (augmentation draws and step sizes are inputs, so the
  program is deterministic; ``refs`` is ``x`` or, with ``match="clean"``, ``E_c(x)``'s taps
  from entry point ``reference``); entry point ``features`` of the same program is the
  shallow forward at the upload point;
* ``fmd-step``: ``(x_star, m, x, feat_x, emb_x, y, alpha[, theta]) -> (x_star_next, m_next)``,
  one FMD iteration through the authorized recognizer with its gallery head (``m`` the
  momentum buffer, ``alpha`` the host's scheduled step size, ``theta`` the diversity warp
  where the program has diversity); entry point ``prepare`` gives ``(logits, feat_x,
  emb_x)`` of the clean image (the host takes ``y = argmax logits``).

The kinds, and which protector settings each bakes in, are :data:`photoveil.artifact.KINDS`.

Example::

    >>> prog = pmt_step_program("faceapi-resnet34", size=112)
    >>> art = export_program(prog.module, prog.inputs, prog.options, "out/pmt-step")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from photoveil.artifact import KINDS
from photoveil.errors import InvalidInput
from photoveil.export.lowering import LowerOptions


@dataclass
class Program:
    """A module to lower, its example inputs, its options and the eager reference."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    options: LowerOptions
    eager: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


class DepthToSpaceUp(nn.Module):
    """A ``ConvTranspose2d`` with kernel == stride (no overlap), as a 1x1 convolution to
    ``s*s*C_out`` channels and a depth-to-space permute: the same function, but XNNPACK's
    strided deconvolution is several times slower than eager here and this is not."""

    def __init__(self, up: nn.ConvTranspose2d):
        super().__init__()
        c_in, c_out, kh, kw = up.weight.shape
        self.s, self.c_out = kh, c_out
        # out[:, o, s*i + a, s*j + b] = sum_c x[:, c, i, j] * W[c, o, a, b] + bias[o]
        w = up.weight.detach().permute(2, 3, 1, 0).reshape(kh * kw * c_out, c_in, 1, 1)
        bias = up.bias.detach().repeat(kh * kw) if up.bias is not None else None
        self.conv = nn.Conv2d(c_in, kh * kw * c_out, 1, bias=bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(w)
            if bias is not None:
                self.conv.bias.copy_(bias)

    @staticmethod
    def applies(m: nn.Module) -> bool:
        return (isinstance(m, nn.ConvTranspose2d) and tuple(m.kernel_size) == tuple(m.stride)
                and m.kernel_size[0] == m.kernel_size[1] and tuple(m.padding) == (0, 0)
                and tuple(m.output_padding) == (0, 0) and m.groups == 1 and tuple(m.dilation) == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s, c = self.s, self.c_out
        y = self.conv(x).view(n, s, s, c, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c, h * s, w * s)


class GeneratorForward(nn.Module):
    """``clamp(x + strength * U(x), 0, 1)`` — what ``GeneratorProtector`` computes, with
    the U-Net's up-sampling deconvolutions as :class:`DepthToSpaceUp` (XNNPACK's strided
    deconvolution is several times slower).
    """

    def __init__(self, net: nn.Module, strength: float = 1.0):
        super().__init__()
        import copy

        net = copy.deepcopy(net).eval()
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if DepthToSpaceUp.applies(child):
                    setattr(parent, name, DepthToSpaceUp(child))
        self.net, self.strength = net, float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.protect(x, self.strength)


class UploadFeatures(nn.Module):
    """Split-point features of a :class:`ShallowModel` (its last tap)."""

    def __init__(self, shallow: nn.Module):
        super().__init__()
        self.shallow = shallow.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shallow(x)[-1]


def _size(size, default) -> tuple[int, int]:
    if size is None:
        return tuple(default)
    if isinstance(size, int):
        size = (size, size)
    h, w = size
    if not (8 <= h <= 1024 and 8 <= w <= 1024):
        raise InvalidInput(f"input size must be in 8..1024 pixels, got {h}x{w}")
    return int(h), int(w)


def _rand(*shape, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def generator_program(net: nn.Module, size=112, batch: int = 1, strength: float = 1.0, model_id: str = "",
                      **lower_opts) -> Program:
    """Generator forward at ``size`` for a ``UNetGenerator`` ``net``."""
    h, w = _size(size, (112, 112))
    mod = GeneratorForward(net, strength).eval()
    x = _rand(batch, net.in_channels, h, w)
    opts = LowerOptions(kind="generator", model_id=model_id, program="generator", input_names=["image"],
                        output_names=["protected"], extra={"strength": strength, **net.config()}, **lower_opts)
    return Program(mod, (x,), opts, mod)


def _alignment(model_id: str) -> dict:
    """The face alignment a registry recognizer's inputs expect (for the manifest)."""
    from photoveil.facemodels.align import model_template

    template, zoom = model_template(model_id)
    return {"template": template, "zoom": zoom}


def _facenet(model, cache_dir=None):
    if isinstance(model, str):
        from photoveil.facemodels import registry

        return registry.load(model, cache_dir=cache_dir)
    return model


def shallow_program(model="faceapi-resnet34", split: str | None = None, size=None, batch: int = 1,
                    cache_dir=None, **lower_opts) -> Program:
    """Shallow forward ``E_c`` of a registry recognizer (name or loaded ``FaceNet``).

    ``layout="NHWC"`` (in ``lower_opts``) makes a channels-last program: no layout
    conversions at XNNPACK's edges (about 8 % of its latency at 150x150). NCHW stays the
    default because ExecuTorch's Java ``Tensor`` has no dim order (executorch#11593), so an
    Android app can only feed contiguous NCHW; the Python runtime converts either way."""
    from photoveil.client.protect.shallow import from_facenet

    net = _facenet(model, cache_dir)
    spec = net.spec
    split = spec.split_point(split)
    mod = UploadFeatures(from_facenet(net, [split]))
    h, w = _size(size, spec.input_size)
    x = _rand(batch, 3, h, w)
    opts = LowerOptions(kind="shallow", model_id=spec.name, program="shallow", split=split,
                        alignment=_alignment(spec.name), input_names=["image"], output_names=["features"],
                        **lower_opts)
    return Program(mod, (x,), opts, mod)


class Reference(nn.Module):
    """``x -> E_c(x)``'s taps of every authorized model (the ``reference`` entry point of a
    ``match="clean"`` PMT step program: computed once per image, passed into every step)."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.step.reference(x))


def pmt_step_inputs(prot, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Example inputs of ``prot``'s step callable: ``(x_t, m, *refs, noise, theta, alpha)``
    (draws stacked over ``steps_per_call``)."""
    x_t, refs = prot.start(x, g)
    k = prot.config.steps_per_call
    draws = [prot.draws(x, g) for _ in range(k)]
    noise, theta = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
    alpha = torch.full((k, 1, 1, 1), prot.config.step_size / 255.0)
    return (x_t, torch.zeros_like(x_t), *refs, noise, theta, alpha)


def pmt_input_names(prot) -> list[str]:
    refs = ["x"] if prot.config.match == "augmented" else [
        f"ref_{m.name or i}_{p}" for i, m in enumerate(prot.models) for p in m.points]
    return ["x_t", "m", *refs, "noise", "theta", "alpha"]


def pmt_step_program(models="faceapi-resnet34", config=None, size=None, batch: int = 1, mode: str = "fast",
                     cache_dir=None, with_features: bool = True, **lower_opts) -> Program:
    """``steps_per_call`` PMT iterations for the authorized model(s) (registry names,
    FaceNets or ShallowModels), traced with the XNNPACK-friendly backward rewrites of
    ``mode``: ``(x_t, m, *refs, noise, theta, alpha) -> (x_t_next, m_next, loss)``
    (:class:`~photoveil.client.protect.pmt.PMTStep`); entry points ``features`` (the
    upload-point forward) and, with ``match="clean"``, ``reference`` (``x -> refs``)."""
    from photoveil.client.protect.pmt import PMTConfig, PMTProtector
    from photoveil.export.gradients import trace_step

    config = config or PMTConfig()
    if isinstance(models, (str, nn.Module)):
        models = [models]
    models = [_facenet(m, cache_dir) for m in models]
    prot = PMTProtector(models, config, cache_dir=cache_dir)
    specs = [getattr(m, "spec", None) for m in models]
    default = specs[0].input_size if specs[0] is not None else (112, 112)
    h, w = _size(size, default)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, h, w, generator=g)
    inputs = pmt_step_inputs(prot, x, g)
    gm = trace_step(prot.step, inputs, mode=mode)
    entry_points = {}
    if with_features:
        if prot.uploaders[0] is None:
            raise InvalidInput(f"upload point {prot.config.upload!r} is not a tap of {prot.models[0].name or 'the model'}; "
                               "pass the recognizer itself or with_features=False")
        entry_points["features"] = (UploadFeatures(prot.uploaders[0]), (x,))
    if prot.config.match == "clean":
        entry_points["reference"] = (Reference(prot.one_step), (x,))
    params = {**KINDS["pmt-step"].params(prot.config), "match_split": prot.models[0].points[-1],
              "models": [m.name for m in prot.models], "trace_mode": mode,
              "units": "pixel quantities in 0-255 units; noise and alpha inputs already in [0,1] units"}
    opts = LowerOptions(kind="pmt-step", model_id="+".join(m.name for m in prot.models), program="pmt-step",
                        split=(prot.uploaders[0] or prot.models[0]).points[-1],
                        alignment=_alignment(prot.models[0].name) if specs[0] is not None else None,
                        input_names=pmt_input_names(prot),
                        output_names=["x_t_next", "m_next", "loss"], extra=params, entry_points=entry_points,
                        **lower_opts)
    return Program(gm, inputs, opts, prot.step, meta={"protector": prot})


def fmd_step_program(classifier: nn.Module, config=None, size=(150, 150), batch: int = 1, mode: str = "fast",
                     model_id: str = "", split: str | None = None, **lower_opts) -> Program:
    """One FMD iteration through ``classifier`` (``(logits, feature_map)``):
    ``(x_star, m, x, feat_x, emb_x, y, alpha[, theta]) -> (x_star_next, m_next)``, plus the
    ``prepare`` method ``x -> (logits, feat_x, emb_x)``."""
    from photoveil.client.protect.fmd import FMDConfig, FMDPrepare, FMDProtector
    from photoveil.client.protect.ops import random_affine_theta
    from photoveil.export.gradients import trace_step

    config = config or FMDConfig()
    prot = FMDProtector(classifier, config)
    h, w = _size(size, (150, 150))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, h, w, generator=g)
    prepare = FMDPrepare(prot.classifier)
    with torch.no_grad():
        logits, feat_x, emb_x = prepare(x)
    y = logits.argmax(1)
    x_star = (x + (2 * torch.rand(x.shape, generator=g) - 1) * prot.step.eps).clamp(0, 1)
    m = torch.zeros_like(x)
    alpha = torch.full((1,), config.alpha / 255.0)
    inputs = (x_star, m, x, feat_x, emb_x, y, alpha)
    names = ["x_star", "m", "x", "feat_x", "emb_x", "y", "alpha"]
    if prot.step.diversity:
        d = config.diversity
        inputs += (random_affine_theta(batch, 60.0 * d, d, d, generator=g),)
        names.append("theta")
    gm = trace_step(prot.step, inputs, mode=mode)
    params = {**KINDS["fmd-step"].params(prot.config), "trace_mode": mode, "classes": int(logits.shape[1]),
              "units": "eps/alpha in 0-255 units; the alpha input in [0,1] units"}
    opts = LowerOptions(kind="fmd-step", model_id=model_id, program="fmd-step", split=split,
                        alignment=_alignment(model_id) if model_id else None,
                        input_names=names, output_names=["x_star_next", "m_next"], extra=params,
                        entry_points={"prepare": (prepare, (x,))}, **lower_opts)
    return Program(gm, inputs, opts, prot.step, meta={"protector": prot})
