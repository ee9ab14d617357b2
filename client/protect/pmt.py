"""``--method pmt``: Privacy Minimization Transformation and MR-PMT (Pu et al., "Facial Data
Minimization: Shallow Model as Your Privacy Filter", Alg. 1 + 2, Eq. 7-8).

Start from an image that carries nothing of the face (Gaussian noise by default) and make
its *shallow features* match the original's by signed-gradient steps through the
authorized model's shallow part ``E_c``::

    x~_0 = init(x)
    x~_{i+1} = clip_[0,1]( x~_i - alpha_i * sign( d_i ) )
    d_i = W (x) grad_x~ J                                     (optimizer "sign", Alg. 1)
    d_i = mu d_{i-1} + W (x) grad_x~ J / mean|W (x) grad_x~ J|  (optimizer "momentum", MI-FGSM)
    J = sum_m || A(E_c^m(T(x~))) - A(E_c^m(T'(x))) ||^2 / ||A(E_c^m(T'(x)))||^2

* ``T``: augmentation drawn afresh each step (``noise`` — default, ``affine``, ``mix``
  (either, by coin flip), ``none``); ``T' = T`` applied identically to ``x`` (``match``
  ``augmented``: one more shallow forward per step) or ``T' = id`` (``match`` ``clean``:
  ``E_c(x)`` computed once per image and passed into every step);
* ``alpha_i``: the step size of step ``i`` (``schedule``: constant, linear or cosine decay);
  the loop stops early once every image's ``J <= stop_loss`` (0: never);
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

    ``forward(x_t, m, *refs, noise, theta, alpha) -> (x_t_next, m_next, loss)``:

    * ``m [N,3,H,W]``: the optimizer's state (the momentum buffer; zeros at the start; the
      ``sign`` optimizer returns its smoothed gradient there and ignores the input);
    * ``refs``: what ``E_c(T(x~))`` is matched to: ``(x,)`` with ``match="augmented"``
      (``E_c(T(x))`` recomputed each step), else the taps of ``E_c(x)`` of every model in
      order (:meth:`reference`, computed once by the host);
    * ``noise [N,3,H,W]`` (already scaled, in [0,1] units) and ``theta [N,2,3]`` (affine
      matrices): the augmentation's random draws, passed in so the step is deterministic;
      which of them is used is fixed at construction (``use_noise``, ``use_affine``);
    * ``alpha [1,1,1,1]``: this step's step size in [0,1] units (the host's schedule);
    * ``loss [N,1,1,1]``: each image's ``J`` at ``x_t`` (before the update), for early stopping.
    """

    def __init__(self, models: Sequence[ShallowModel], pool: int, kernel: torch.Tensor | None, use_noise: bool,
                 use_affine: bool, optimizer: str = "sign", momentum: float = 0.9, match: str = "augmented",
                 lowpass: torch.Tensor | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.pool = pool
        self.use_noise, self.use_affine = use_noise, use_affine
        self.optimizer, self.mu, self.match = optimizer, float(momentum), match
        self.register_buffer("kernel", kernel if kernel is not None else torch.empty(0), persistent=False)
        # the 1-D Gaussian (along W, and its transpose along H) whose low-pass of each update
        # is removed (``highpass``); empty = off
        self.register_buffer("lowpass", lowpass if lowpass is not None else torch.empty(0), persistent=False)
        self.register_buffer("lowpass_t", lowpass.transpose(-1, -2).contiguous() if lowpass is not None
                             else torch.empty(0), persistent=False)

    def augment(self, v: torch.Tensor, noise: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.use_noise:
            v = v + noise
        if self.use_affine:
            v = ops.affine_warp(v, theta)
        return v

    def embed(self, model: ShallowModel, v: torch.Tensor) -> torch.Tensor:
        feats = model(v)  # several taps: multi-layer aggregation; one: plain features
        return ops.pooled_concat(feats, self.pool) if len(feats) > 1 else feats[0].flatten(1)

    def taps(self, model: ShallowModel, v: torch.Tensor) -> list[torch.Tensor]:
        """The tensors :meth:`embed` flattens and concatenates (pooled when aggregating)."""
        feats = model(v)
        if len(feats) == 1:
            return feats
        return [F.avg_pool2d(f, self.pool, ceil_mode=True) if f.dim() == 4 and self.pool > 1 else f for f in feats]

    def reference(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The taps of ``E_c(x)`` of every model, in order: the ``refs`` of ``match="clean"``."""
        with torch.no_grad():
            return [z for m in self.models for z in self.taps(m, x)]

    def _targets(self, refs, noise, theta) -> list[list[torch.Tensor]]:
        """Per model, the taps ``E_c(T(x~))`` is matched to."""
        if self.match == "augmented":
            xa = self.augment(refs[0], noise, theta)
            with torch.no_grad():
                return [self.taps(m, xa) for m in self.models]
        out, i = [], 0
        for m in self.models:
            k = len(m.points)
            out.append(list(refs[i:i + k]))
            i += k
        return out

    def loss(self, x_t: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """J summed over models (per-image losses summed over the batch); ``rest`` is
        ``(*refs, noise, theta)``."""
        *refs, noise, theta = rest
        xta = self.augment(x_t, noise, theta)
        total = x_t.new_zeros(())
        for m, zs in zip(self.models, self._targets(refs, noise, theta)):
            z = torch.cat([t.flatten(1) for t in zs], dim=1)
            zt = self.embed(m, xta)
            energy = z.pow(2).mean(1).clamp_min(1e-8)
            total = total + ((zt - z).pow(2).mean(1) / energy).sum()
        return total

    @staticmethod
    def _mean_all(t: torch.Tensor) -> torch.Tensor:
        """Per-image mean ``[N, ...] -> [N,1,1,1]`` as 4-D global average pools (XNNPACK
        runs these; a 2-D ``mean(1)`` it does not)."""
        if t.dim() == 4:
            t = t.mean((2, 3), keepdim=True)
        return t.reshape(t.shape[0], 1, 1, -1).mean((2, 3), keepdim=True)

    @classmethod
    def feature_grads(cls, zts: list[torch.Tensor], zs: list[torch.Tensor]
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(dJ/dzt per tap, J [N,1,1,1])`` of one model's term of :meth:`loss`: the
        gradient is ``2 (zt - z) / (D * energy)`` with ``D`` and ``energy = mean(z^2)`` over
        the concatenation of all taps.

        Written out (instead of differentiating the loss) so that the exported step program
        has no flatten / concat / reduction to a scalar and back; everything stays 4-D.
        """
        sizes = [z[0].numel() for z in zs]
        d = sum(sizes)
        energy = sum(cls._mean_all(z.pow(2)) * (k / d) for z, k in zip(zs, sizes)).clamp_min(1e-8)
        denom = energy * (d / 2.0)  # a tensor divisor: div, not reciprocal, in the program
        grads = [(zt - z) / (denom if z.dim() == 4 else denom.view(-1, 1)) for zt, z in zip(zts, zs)]
        loss = sum(cls._mean_all((zt - z).pow(2)) * (k / d) for zt, z, k in zip(zts, zs, sizes)) / energy
        return grads, loss

    def forward(self, x_t: torch.Tensor, m: torch.Tensor, *rest: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *refs, noise, theta, alpha = rest
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            xta = self.augment(x_t, noise, theta)
            outs, grads, loss = [], [], None
            for model, zs in zip(self.models, self._targets(refs, noise, theta)):
                zts = self.taps(model, xta)  # grad of loss() by the chain rule through each tap
                outs += zts
                g, j = self.feature_grads([t.detach() for t in zts], zs)
                grads += g
                loss = j if loss is None else loss + j
            (grad,) = torch.autograd.grad(outs, x_t, grad_outputs=grads)
        grad = ops.smooth(grad, self.kernel if self.kernel.numel() else None)
        if self.optimizer == "momentum":  # MI-FGSM: L1-normalised gradient into the buffer
            direction = m * self.mu + grad / self._mean_all(grad.abs()).clamp_min(1e-20)
        else:
            direction = grad
        update = direction.sign()
        if self.lowpass.numel():
            update = update - ops.separable_smooth(update, self.lowpass, self.lowpass_t)
        x_next = (x_t.detach() - update * alpha).clamp(0.0, 1.0)
        return x_next, direction, loss.detach()


class PMTSteps(nn.Module):
    """``k`` consecutive :class:`PMTStep` calls as one function (one program call on the
    device): the per-step draws are stacked along dim 0 (``noise [k*N,3,H,W]``, ``theta
    [k*N,2,3]``, ``alpha [k,1,1,1]``); returns the last step's ``(x_t, m, loss)``."""

    def __init__(self, step: PMTStep, k: int = 1):
        super().__init__()
        self.step, self.k = step, int(k)

    def forward(self, x_t: torch.Tensor, m: torch.Tensor, *rest: torch.Tensor):
        if self.k == 1:
            return self.step(x_t, m, *rest)
        *refs, noise, theta, alpha = rest
        n = x_t.shape[0]
        loss = None
        for i in range(self.k):
            x_t, m, loss = self.step(x_t, m, *refs, noise[i * n:(i + 1) * n], theta[i * n:(i + 1) * n],
                                     alpha[i:i + 1])
        return x_t, m, loss


class PMTBase(StepProtector):
    """PMT's host side: the start image ``x~_0``, each step's augmentation draws and the
    loop (:class:`~photoveil.client.protect.steps.StepProtector`); the step is the
    subclass's: :class:`PMTStep` here, the ``pmt-step`` program on the device."""

    method = "pmt"
    Config = PMTConfig
    # low/mid/high privacy: a larger init noise keeps the image further from the face;
    # more steps match the authorized features more closely. high matches the model's
    # deeper split (more invariant features: x~ re-grows less of the face) and uploads
    # the stem features of x~, not the matched ones, so they do not invert to the face
    # (README, "Reconstruction").
    # Issue 21: the same protection in 4-8x fewer steps: MI-FGSM momentum (mu 0.5) with a
    # linear decay from 7x the old step size to a tenth of it, E_c(x) computed once
    # (match "clean") and 5 steps per program call (README, "Protection in a blink").
    _FAST = {"optimizer": "momentum", "momentum": 0.5, "schedule": "linear", "final_step": 0.1, "match": "clean",
             "steps_per_call": 5}
    # Issue 20: high also removes each update's low-pass (std 2.5 px), so the coarse face
    # no longer re-grows: an out-of-focus or down-scaled look at x~ shows the grey start
    # image (README, "Readability witness"); 2.5 was chosen on the seed-0 draw over 1.5 and 5.
    _HIGH = {"init_sigma": 150.0, "steps": 40, "step_size": 3.5, "split": "deep", "upload": "stem", **_FAST}
    PRESETS = {
        "low": {"init_sigma": 40.0, "steps": 20, "step_size": 4.0, **_FAST},
        "mid": {"init_sigma": 60.0, "steps": 25, "step_size": 3.5, **_FAST},
        "high": {**_HIGH, "highpass": 2.5},
    }
    # the presets before issue 21 (plain signed gradient, constant step, E_c(T(x)) every
    # step, one step per call): the ablation rows (``--sweep preset=mid,legacy-mid``)
    _SIGN = {"optimizer": "sign", "schedule": "constant", "match": "augmented", "steps_per_call": 1}
    LEGACY_PRESETS = {
        "low": {"init_sigma": 40.0, "steps": 150, "step_size": 0.75, **_SIGN},
        "mid": {"init_sigma": 60.0, "steps": 100, "step_size": 0.5, **_SIGN},
        "high": {"init_sigma": 150.0, "steps": 200, "step_size": 0.5, "split": "deep", "upload": "stem", **_SIGN},
    }
    # ``high-full-band``: high as it was before issue 20, every update's low-pass kept
    ABLATION_PRESETS = {**{f"legacy-{k}": v for k, v in LEGACY_PRESETS.items()}, "high-full-band": _HIGH}

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

    def reference(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The taps of ``E_c(x)`` (every model's, in order), for ``match="clean"``."""
        raise NotImplementedError

    def start(self, x, rng):
        """``(x~_0, refs)``: the start image and what every step matches (``(x,)``, or
        ``E_c(x)``'s taps computed once)."""
        refs = (x,) if self.config.match == "augmented" else tuple(self.reference(x))
        return self.initial(x, rng), refs

    def _protect(self, images: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """The loop: ``ceil(steps / steps_per_call)`` step calls, each ``steps_per_call``
        steps (the last padded with zero-size steps), stopping early at ``stop_loss``.
        ``last_run`` records the calls, steps taken and final per-image loss."""
        cfg = self.config
        x = images.to(cfg.device)
        x_t, refs = self.start(x, rng)
        m = torch.zeros_like(x_t)
        alphas = [a / 255.0 for a in cfg.step_sizes()]
        k = cfg.steps_per_call
        loss, calls, done = None, 0, 0
        for first in range(0, cfg.steps, k):
            chunk = alphas[first:first + k]
            draws = [self.draws(x, rng) for _ in chunk]
            while len(draws) < k:  # padding steps: step size 0, no random draws
                draws.append((torch.zeros_like(x), ops.identity_theta(x.shape[0], x.device)))
                chunk.append(0.0)
            noise = draws[0][0] if k == 1 else torch.cat([d[0] for d in draws])
            theta = draws[0][1] if k == 1 else torch.cat([d[1] for d in draws])
            alpha = torch.tensor(chunk, dtype=x.dtype, device=x.device).view(k, 1, 1, 1)
            x_t, m, loss = self.step(x_t, m, *refs, noise, theta, alpha)
            calls += 1
            done = min(cfg.steps, first + k)
            if cfg.stop_loss > 0 and bool((loss <= cfg.stop_loss).all()):
                break
        self.last_run = {"calls": calls, "steps": done,
                         "loss": None if loss is None else loss.flatten().tolist()}
        return x_t.to(images.device)

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
        self.one_step = PMTStep(self.models, cfg.pool, kernel=kernel, use_noise=cfg.augment in ("noise", "mix"),
                                use_affine=cfg.augment in ("affine", "mix"), optimizer=cfg.optimizer,
                                momentum=cfg.momentum, match=cfg.match,
                                lowpass=ops.gaussian_kernel(cfg.highpass, 3) if cfg.highpass else None).to(cfg.device)
        super().__init__(cfg, PMTSteps(self.one_step, cfg.steps_per_call))

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

    def reference(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.one_step.reference(x)

    def features_of(self, protected: torch.Tensor, model: int = 0) -> torch.Tensor:
        """Upload-point features of already protected images."""
        uploader = self.uploaders[model]
        if uploader is None:
            m = self.models[model]
            raise InvalidInput(f"upload point {self.config.upload!r} is not a tap of shallow model "
                               f"{m.name or '(unnamed)'} (taps: {', '.join(m.points)}); pass the recognizer itself")
        with torch.no_grad():
            return uploader.upload_features(protected.to(self.config.device))
