"""``--method pmt``: Privacy Minimization Transformation and MR-PMT (Pu et al., "Facial Data
Minimization: Shallow Model as Your Privacy Filter", Alg. 1 + 2, Eq. 7-8).

Start from an image that carries nothing of the face (Gaussian noise by default) and make
its *shallow features* match the original's by signed-gradient steps through the
authorized model's shallow part ``E_c``::

    x~_0 = init(x)
    x~_{i+1} = clip_[0,1]( x~_i - alpha * sign( W (x) grad_x~ J ) )
    J = sum_m || A(E_c^m(T(x~))) - A(E_c^m(T(x))) ||^2 / ||A(E_c^m(T(x)))||^2

* ``T``: augmentation drawn afresh each step and applied identically to ``x`` and ``x~``
  (``noise`` — default, ``affine``, ``mix`` (either, by coin flip), ``none``);
* ``A``: multi-layer aggregation: AvgPool + concat of the features at ``layers`` and at the
  split point (just the split point's features when ``layers`` is empty);
* ``W``: translation-invariant gradient smoothing (``gaussian`` — default, ``linear``,
  ``none``) of half-length ``kernel_length``;
* ``m`` runs over the authorized models: one model is PMT, several is MR-PMT (Eq. 8).
  Each model's loss is normalised by its feature energy so no model dominates the sign.

The step budget decides privacy vs utility: more / larger steps re-grow the face (the
features of the face *are* the face to a deep enough network), fewer keep the image noise
but match the features less well. Pixel quantities are in 0-255 units like the paper.

Two outputs, for the two upload cases: ``protect(x)`` -> the obfuscated image ``x~``;
``features(x)`` -> ``E_c(x~)`` at the split point, or the features of ``x~`` at a shallower
``upload`` point (what the server's rest half consumes).

Shapes: images ``[N,3,H,W]`` float in [0,1] at the models' input size.

Example::

    >>> pmt = PMTProtector.from_preset("mid", models=["faceapi-resnet34"], seed=0)
    >>> x_obf = pmt.protect(faces)             # [N,3,150,150], looks like noise
    >>> z = pmt.features(faces)                # shallow features to upload instead
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.client.protect import ops
from photoveil.client.protect.base import register_protector
from photoveil.client.protect.configs import AUGMENTS, INITS, KERNELS, PMTConfig
from photoveil.client.protect.shallow import ShallowModel, from_facenet
from photoveil.client.protect.steps import StepProtector
from photoveil.errors import InvalidInput




def check_upload(spec, split: str, upload: str) -> None:
    """InvalidInput unless ``upload`` is a named split point of ``spec`` at or before ``split``."""
    points = spec.split_points
    if upload not in points:
        raise InvalidInput(f"{spec.name} has no split point {upload!r} for upload; named split points: "
                           f"{', '.join(points)}")
    if points[upload] > points.get(split, -1):
        raise InvalidInput(f"upload point {upload!r} of {spec.name} is deeper than the split {split!r}: the "
                           f"uploaded features must come at or before the matched ones")


class PMTStep(nn.Module):
    """One PMT iteration as a pure function — what the on-device step program exports.

    ``forward(x_t, x, noise, theta) -> x_t_next``: ``noise [N,3,H,W]`` (already scaled, in
    [0,1] units) and ``theta [N,2,3]`` (affine matrices) are the augmentation's random
    draws, passed in so the step is deterministic. Which of them is used is fixed at
    construction (``use_noise``, ``use_affine``).
    """

    def __init__(self, models: Sequence[ShallowModel], step_size: float, pool: int,
                 kernel: torch.Tensor | None, use_noise: bool, use_affine: bool):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.alpha = step_size
        self.pool = pool
        self.use_noise, self.use_affine = use_noise, use_affine
        self.register_buffer("kernel", kernel if kernel is not None else torch.empty(0), persistent=False)

    def augment(self, v: torch.Tensor, noise: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.use_noise:
            v = v + noise
        if self.use_affine:
            v = ops.affine_warp(v, theta)
        return v

    def embed(self, model: ShallowModel, v: torch.Tensor) -> torch.Tensor:
        feats = model(v)  # several taps: multi-layer aggregation; one: plain features
        return ops.pooled_concat(feats, self.pool) if len(feats) > 1 else feats[0].flatten(1)

    def loss(self, x_t: torch.Tensor, x: torch.Tensor, noise: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """J summed over models (per-image losses summed over the batch)."""
        xa, xta = self.augment(x, noise, theta), self.augment(x_t, noise, theta)
        total = x_t.new_zeros(())
        for m in self.models:
            with torch.no_grad():
                z = self.embed(m, xa)
            zt = self.embed(m, xta)
            energy = z.pow(2).mean(1).clamp_min(1e-8)
            total = total + ((zt - z).pow(2).mean(1) / energy).sum()
        return total

    def taps(self, model: ShallowModel, v: torch.Tensor) -> list[torch.Tensor]:
        """The tensors :meth:`embed` flattens and concatenates (pooled when aggregating)."""
        feats = model(v)
        if len(feats) == 1:
            return feats
        return [F.avg_pool2d(f, self.pool, ceil_mode=True) if f.dim() == 4 and self.pool > 1 else f for f in feats]

    @staticmethod
    def _mean_all(t: torch.Tensor) -> torch.Tensor:
        """Per-image mean ``[N, ...] -> [N,1,1,1]`` as 4-D global average pools (XNNPACK
        runs these; a 2-D ``mean(1)`` it does not)."""
        if t.dim() == 4:
            t = t.mean((2, 3), keepdim=True)
        return t.reshape(t.shape[0], 1, 1, -1).mean((2, 3), keepdim=True)

    @classmethod
    def feature_grads(cls, zts: list[torch.Tensor], zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``dJ/dzt`` of one model's term of :meth:`loss`, per tap: ``2 (zt - z) / (D * energy)``
        with ``D`` and ``energy = mean(z^2)`` over the concatenation of all taps.

        Written out (instead of differentiating the loss) so that the exported step program
        has no flatten / concat / reduction to a scalar and back; everything stays 4-D.
        """
        sizes = [z[0].numel() for z in zs]
        d = sum(sizes)
        energy = sum(cls._mean_all(z.pow(2)) * (k / d) for z, k in zip(zs, sizes)).clamp_min(1e-8)
        denom = energy * (d / 2.0)  # a tensor divisor: div, not reciprocal, in the program
        return [(zt - z) / (denom if z.dim() == 4 else denom.view(-1, 1)) for zt, z in zip(zts, zs)]

    def forward(self, x_t: torch.Tensor, x: torch.Tensor, noise: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            xa, xta = self.augment(x, noise, theta), self.augment(x_t, noise, theta)
            outs, grads = [], []
            for m in self.models:  # grad of loss() by the chain rule through each tap
                with torch.no_grad():
                    zs = self.taps(m, xa)
                zts = self.taps(m, xta)
                outs += zts
                grads += self.feature_grads([t.detach() for t in zts], zs)
            (grad,) = torch.autograd.grad(outs, x_t, grad_outputs=grads)
        grad = ops.smooth(grad, self.kernel if self.kernel.numel() else None)
        return (x_t.detach() - self.alpha * grad.sign()).clamp(0.0, 1.0)


class PMTBase(StepProtector):
    """PMT's host side: the start image ``x~_0``, each step's augmentation draws and the
    loop (:class:`~photoveil.client.protect.steps.StepProtector`); the step is the
    subclass's: :class:`PMTStep` here, the ``pmt-step`` program on the device."""

    method = "pmt"
    Config = PMTConfig
    # low/mid/high privacy: a larger init noise keeps the image further from the face;
    # more steps match the authorized features more closely. high matches the model's
    # deeper split (more invariant features: x~ re-grows less of the face) and uploads
    # the stem features of x~, not the matched ones, so they do not invert to the face;
    # its start noise is so large that it needs 200 steps (README, "Reconstruction").
    PRESETS = {
        "low": {"init_sigma": 40.0, "steps": 150, "step_size": 0.75},
        "mid": {"init_sigma": 60.0, "steps": 100, "step_size": 0.5},
        "high": {"init_sigma": 150.0, "steps": 200, "step_size": 0.5, "split": "deep", "upload": "stem"},
    }

    def initial(self, x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """``x~_0``: an image with none of the face's appearance (Alg. 1 line 1)."""
        cfg = self.config
        if cfg.init == "gaussian":
            noise = torch.randn(x.shape, generator=rng, device=x.device)
            return (0.5 + noise * cfg.init_sigma / 255.0).clamp(0.0, 1.0)
        if cfg.init == "sort":
            n, c, h, w = x.shape
            perm = torch.stack([torch.randperm(h * w, generator=rng, device=x.device) for _ in range(n)])
            flat = x.flatten(2)
            return torch.gather(flat, 2, perm[:, None, :].expand(n, c, h * w)).view_as(x)
        # blur: the original, heavily smoothed
        from torchvision.transforms.functional import gaussian_blur

        sigma = max(cfg.init_sigma / 4.0, 0.5)
        k = min(int(2 * round(3 * sigma) + 1), 2 * (min(x.shape[-2:]) // 2) - 1)  # reflect pad < size
        return gaussian_blur(x, [k, k], [sigma, sigma])

    def start(self, x, rng):
        return self.initial(x, rng), (x,)

    def draws(self, x: torch.Tensor, rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's augmentation draws: ``noise`` (scaled) and affine ``theta``."""
        cfg = self.config
        n = x.shape[0]
        noise = torch.randn(x.shape, generator=rng, device=x.device) * (cfg.aug_sigma / 255.0)
        theta = ops.random_affine_theta(n, cfg.aug_affine, cfg.aug_affine / 150.0, cfg.aug_affine / 150.0,
                                        generator=rng, device=x.device)
        if cfg.augment == "mix":  # each step either noise or affine, by coin flip
            coin = torch.rand((), generator=rng, device=x.device) < 0.5
            noise = noise * coin
            theta = torch.where(coin, ops.identity_theta(n, x.device), theta)
        return noise, theta

    def features(self, images: torch.Tensor, model: int = 0) -> torch.Tensor:
        """Shallow features of the obfuscated images at the upload point (default: the split
        point ``E_c(x~)``) of authorized model ``model`` — the upload-features case."""
        return self.features_of(self.protect(images), model)

    def features_of(self, protected: torch.Tensor, model: int = 0) -> torch.Tensor:
        """Upload-point features of already protected images (the subclass's models)."""
        raise NotImplementedError


@register_protector
class PMTProtector(PMTBase):
    """PMT (one authorized model) / MR-PMT (several), eager.

    Args:
        models: the authorized model(s): registry names (``"faceapi-resnet34"``), loaded
            ``FaceNet`` modules, or ready :class:`ShallowModel` taps. Names and FaceNets
            are cut at ``config.split`` (+ ``config.layers``).
        config: :class:`PMTConfig`.
        cache_dir: face-model cache (for names).
    """

    def __init__(self, models, config: PMTConfig | None = None, cache_dir=None):
        cfg = config if config is not None else PMTConfig()
        if not isinstance(cfg, PMTConfig):
            raise TypeError(f"{type(self).__name__} takes a PMTConfig, got {type(cfg).__name__}")
        if isinstance(models, (str, nn.Module)):
            models = [models]
        if not models:
            raise ValueError("PMT needs at least one authorized model")
        self.models, self.uploaders = [], []
        for m in models:
            shallow, uploader = self._shallow(m, cfg, cache_dir)
            self.models.append(shallow)
            self.uploaders.append(uploader)
        if cfg.pool != PMTConfig.pool and all(len(m.points) == 1 for m in self.models):
            # a lone split point is matched unpooled: a pool there would silently do nothing
            raise ValueError(f"pool (the AvgPool of multi-layer aggregation) acts only with layers; got "
                             f"pool={cfg.pool} and one tap per model: add layers or leave pool at {PMTConfig.pool}")
        kernel = None if cfg.kernel == "none" else ops.ti_kernel(cfg.kernel, cfg.kernel_length, 3)
        step = PMTStep(self.models, cfg.step_size / 255.0, cfg.pool, kernel=kernel,
                       use_noise=cfg.augment in ("noise", "mix"), use_affine=cfg.augment in ("affine", "mix"))
        super().__init__(cfg, step.to(cfg.device))

    @staticmethod
    def _shallow(m, cfg: PMTConfig, cache_dir) -> tuple[ShallowModel, ShallowModel | None]:
        """``(taps PMT matches, the model cut at the upload point)``."""
        upload = cfg.upload
        if isinstance(m, ShallowModel):
            if upload is None or upload == m.points[-1]:
                return m, m
            if upload not in m.points:  # protect() works; features_of() says what is missing
                return m, None
            k = m.points.index(upload) + 1
            return m, ShallowModel(m.segments[:k], m.name, m.points[:k])
        if isinstance(m, str):
            from photoveil.facemodels import registry

            m = registry.load(m, cache_dir=cache_dir)
        spec = getattr(m, "spec", None)
        if spec is None:
            raise InvalidInput(f"authorized model must be a registry name, a FaceNet or a ShallowModel; got {type(m).__name__}")
        split = spec.split_point(cfg.split)
        taps = from_facenet(m, [*cfg.layers, split])
        if upload is None or upload == split:
            return taps, taps
        check_upload(spec, split, upload)
        return taps, from_facenet(m, [upload])

    def features_of(self, protected: torch.Tensor, model: int = 0) -> torch.Tensor:
        """Upload-point features of already protected images."""
        uploader = self.uploaders[model]
        if uploader is None:
            m = self.models[model]
            raise InvalidInput(f"upload point {self.config.upload!r} is not a tap of shallow model "
                               f"{m.name or '(unnamed)'} (taps: {', '.join(m.points)}); pass the recognizer itself")
        with torch.no_grad():
            return uploader.upload_features(protected.to(self.config.device))
