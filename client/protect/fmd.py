"""``--method fmd``: Feature-Map Distortion (Chai et al., "Only My Model On My Data", Alg. 1, Eq. 5).

Perturb the image inside an L-inf ball so that an internal feature map of the authorized
model moves as far as possible (which transfers to, and breaks, unauthorized models with
similar early layers) while the authorized model keeps what it needs::

    J = L'(f_l(T x*), f_l(T x)) - lam * CE(f(T x*), y) + lam_emb * cos(e(T x*), e(x))
    x*_0 ~ U[x - eps, x + eps]
    g_{i+1} = mu g_i + W (x) grad J / mean|W (x) grad J|
    x*_{i+1} = clip_[x-eps, x+eps] clip_[0,1]( x*_i + alpha_i * sign(g_{i+1}) )

The paper's Alg. 1 is ``L' = MSE``, ``lam = 1``, ``lam_emb = 0``, ``mu = 0``, ``T`` and
``W`` the identity and a constant ``alpha`` (eps 16, alpha 4, N 100 in 0-255 units): the
:data:`PAPER` ablation row. What photoveil adds, each a :class:`FMDConfig` field, for
transfer to unauthorized recognizers and for speed:

* ``lam_emb``: keep the authorized *embedding* ``e`` (cosine to the clean one), not only
  the argmax ``y`` of a head over enrolled identities: the provider verifies against its
  own gallery with a threshold, so the descriptor must stay where it was;
* ``feature_loss="nmse"``: ``||f_l(x*) - f_l(x)||^2 / ||f_l(x)||^2``, scale-free per image,
  so the weights mean the same at every feature layer (``split``; the paper's layer
  ablation, Sec. 8.1, is repeated for face-api's ResNet-34 in docs/methods.md);
* ``mu`` (MI-FGSM momentum), ``alpha_schedule="cosine"`` and a few large steps instead of
  100 small ones; ``diversity`` (a random affine ``T`` per step, Xie et al.'s input
  diversity) and ``kernel`` (TI smoothing ``W``, Dong et al.).

``y`` is the authorized model's own prediction on the clean image: the phone does not know
the true label, and on the correctly classified images the paper evaluates it equals the
ground truth. ``f_l(x)`` and ``e(x)`` are computed once (``prepare``), not per step.

The authorized classifier is any module returning ``(logits, feature_map)``:
:class:`LayerTap` wraps a classifier (e.g. a zoo model) and a named layer;
:class:`GalleryClassifier` turns a face recognizer into a classifier over enrolled
identities (scaled cosine to each identity's embedding centroid) with the feature map at
a split point, and gives its raw descriptor as the embedding (``parts``).

Shapes: images ``[N,C,H,W]`` float in [0,1].

Example::

    >>> clf = LayerTap(zoo.checkpoints.load_trained("resnet18"), "layer2")
    >>> fmd = FMDProtector(clf, FMDConfig(eps=16, seed=0), in_channels=1)
    >>> x_star = fmd.protect(images)           # ||x_star - images||_inf <= 16/255
    >>> paper = FMDProtector(clf, FMDConfig(**PAPER, seed=0), in_channels=1)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.client.protect.base import register_protector
from photoveil.client.protect.configs import FMDConfig
from photoveil.client.protect.ops import affine_warp, random_affine_theta, smooth, ti_kernel
from photoveil.client.protect.steps import StepProtector
from photoveil.errors import InvalidInput


FMD_SPLITS = {"faceapi-resnet34": "down64"}
"""FMD's feature layer per recognizer where it differs from the model's default split (the
layer ablation in docs/methods.md); ``FMDConfig.split`` overrides it."""


def feature_layer(spec, split: str | None = None) -> str:
    """The split point FMD distorts on recognizer ``spec``: ``split`` if given, else
    :data:`FMD_SPLITS`, else the model's default split (checked)."""
    return spec.split_point(split if split is not None else FMD_SPLITS.get(spec.name))

PAPER = {"alpha": 4.0, "steps": 100, "lam": 1.0, "lam_emb": 0.0, "feature_loss": "mse", "mu": 0.0,
         "alpha_schedule": "constant", "diversity": 0.0, "kernel": "none", "update": "sign"}
"""The paper's Alg. 1 / Eq. 5 settings (and photoveil's FMD before the transfer variant):
the ablation row, ``FMDConfig(**PAPER, split="block2")`` on faceapi-resnet34."""


class LayerTap(nn.Module):
    """``forward(x) -> (logits, output of submodule `layer`)`` for any classifier."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        names = dict(model.named_modules())
        if layer not in names or not layer:
            choices = ", ".join(n for n, _ in model.named_children())
            raise InvalidInput(f"model has no layer {layer!r}; top-level layers: {choices}")
        self.model, self.layer = model.eval(), layer
        self._feat: list[torch.Tensor] = []
        names[layer].register_forward_hook(lambda _m, _i, out: self._feat.append(out))
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._feat.clear()
        logits = self.model(x)
        return logits, self._feat[-1]


class GalleryClassifier(nn.Module):
    """A face recognizer as a classifier over enrolled identities.

    ``logits = scale * cos(emb(x), centroid_k)``; the feature map is the output of the
    recognizer's shallow half at ``split`` (so one pass gives both).

    Args:
        shallow, rest: the recognizer cut at the feature layer (``FaceNet.split``).
        centroids: ``[K, D]`` embeddings of the enrolled identities (normalised here).
        scale: logit scale (the cosine is in [-1, 1]; CE needs a sharper softmax).
    """

    def __init__(self, shallow: nn.Module, rest: nn.Module, centroids: torch.Tensor, scale: float = 30.0):
        super().__init__()
        if centroids.dim() != 2 or centroids.shape[0] < 2:
            raise InvalidInput(f"centroids must be [K>=2, D], got {tuple(centroids.shape)}")
        self.shallow, self.rest, self.scale = shallow, rest, scale
        self.register_buffer("centroids", F.normalize(centroids.float(), dim=1))

    @classmethod
    def from_facenet(cls, net: nn.Module, split: str, gallery: torch.Tensor, labels: torch.Tensor,
                     scale: float = 30.0) -> GalleryClassifier:
        """Enrol ``gallery [M,3,H,W]`` images with identity ``labels [M]`` (0..K-1)."""
        shallow, rest = net.split(split)
        with torch.no_grad():
            emb = F.normalize(net(gallery), dim=1)
        k = int(labels.max()) + 1
        centroids = torch.zeros(k, emb.shape[1]).index_add_(0, labels, emb)
        return cls(shallow, rest, centroids, scale)

    def head(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [N,K], raw descriptor [N,D])`` from the feature map."""
        raw = self.rest(feat)
        return self.scale * F.normalize(raw, dim=1) @ self.centroids.T, raw

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [N,K], feature map, raw descriptor [N,D])`` in one pass."""
        feat = self.shallow(x)
        logits, raw = self.head(feat)
        return logits, feat, raw

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feat, _ = self.parts(x)
        return logits, feat


def parts(classifier: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, feature_map, embedding)`` of any FMD classifier: its ``parts`` where it has
    one (:class:`GalleryClassifier`: the raw descriptor), else the logits stand in for the
    embedding (a plain classifier has no other output to keep)."""
    if hasattr(classifier, "parts"):
        return classifier.parts(x)
    logits, feat = classifier(x)
    return logits, feat, logits


def paired_parts(classifier: nn.Module, both: torch.Tensor, n: int):
    """:func:`parts` of ``both[:n]`` plus the feature map of ``both[n:]`` (detached): the
    reference of input diversity, from the same shallow pass where the classifier has a
    ``shallow`` half (:class:`GalleryClassifier`)."""
    if hasattr(classifier, "shallow") and hasattr(classifier, "head"):
        feats = classifier.shallow(both)
        feat, ref = feats[:n], feats[n:].detach()
        logits, raw = classifier.head(feat)
        return logits, feat, raw, ref
    logits, feat, emb = parts(classifier, both[:n])
    with torch.no_grad():
        ref = parts(classifier, both[n:])[1]
    return logits, feat, emb, ref


class FMDPrepare(nn.Module):
    """``x -> (logits, feat_x, emb_x)`` of the clean image (the ``prepare`` entry point);
    ``emb_x`` is unit-normalised."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor):
        logits, feat, emb = parts(self.classifier, x)
        return logits, feat, F.normalize(emb.flatten(1), dim=1)


class FMDStep(nn.Module):
    """One FMD iteration, pure (exported as the on-device step program)::

        forward(x_star, m, x, feat_x, emb_x, y, alpha[, theta]) -> (x_star_next, m_next)

    Ascends ``J = L'(f_l(T x*), f_l(T x)) - lam CE(f(T x*), y) + lam_emb cos(e(T x*), e(x))``
    (Eq. 5 plus the embedding term; ``T`` the affine warp ``theta [N,2,3]`` of input
    diversity, absent when ``diversity`` is 0, then ``f_l(T x) = feat_x``, computed once by
    the host). ``m`` is the momentum buffer (``[N,C,H,W]``, zeros at the start), ``alpha``
    a ``[1]`` tensor (the schedule is the host's).

    Args:
        classifier: ``(logits, feat)`` module (see :func:`parts`).
        eps: L-inf budget in [0,1] units.
        lam, lam_emb, feature_loss, mu, diversity: as in :class:`FMDConfig`.
        kernel: TI smoothing kernel of the gradient (``[C,1,2k+1,2k+1]``) or None.
        update: ``sign`` | ``l2`` (see :class:`FMDConfig`).
    """

    def __init__(self, classifier: nn.Module, eps: float, lam: float, lam_emb: float = 0.0,
                 feature_loss: str = "mse", mu: float = 0.0, diversity: bool = False,
                 kernel: torch.Tensor | None = None, update: str = "sign"):
        super().__init__()
        self.update = update
        self.classifier, self.eps, self.lam, self.lam_emb = classifier, eps, lam, lam_emb
        self.feature_loss, self.mu, self.diversity = feature_loss, mu, bool(diversity)
        self.register_buffer("kernel", kernel)

    def loss(self, x_star, feat_x, emb_x, y) -> torch.Tensor:
        """``J`` without diversity (what the step ascends; for tests and analysis)."""
        logits, feat, emb = parts(self.classifier, x_star)
        n = x_star.shape[0]
        if self.feature_loss == "mse":
            dist = F.mse_loss(feat, feat_x)
        else:
            dist = ((feat - feat_x).flatten(1).pow(2).sum(1) / feat_x.flatten(1).pow(2).sum(1).clamp_min(1e-12)).sum() / n
        cos = (F.normalize(emb.flatten(1), dim=1) * emb_x).sum(1).sum() / n
        return dist - self.lam * F.cross_entropy(logits, y) + self.lam_emb * cos

    def output_grads(self, logits, feat, emb, feat_x, emb_x, y):
        """``(dJ/dlogits, dJ/dfeat, dJ/demb)`` of :meth:`loss`, written out:
        ``-lam (softmax - onehot) / N``; ``2 (feat - feat_x) / numel`` (``mse``) or
        ``2 (feat - feat_x) / (N ||feat_x||^2)`` (``nmse``); ``lam_emb (e_x - cos e^) / (N |e|)``.
        The step back-propagates these instead of differentiating the loss, so the
        exported program has no loss reductions over the image (which XNNPACK does not
        run) — a softmax, two small norms and elementwise ops."""
        n = logits.shape[0]
        classes = torch.arange(logits.shape[1], device=logits.device)
        onehot = (classes[None, :] == y[:, None]).to(logits.dtype)  # traceable one-hot
        g_logits = (torch.softmax(logits, dim=1) - onehot) * (-self.lam / n)
        if self.feature_loss == "mse":
            g_feat = (feat - feat_x) * (2.0 / feat.numel())
        else:
            ref = feat_x.flatten(1).pow(2).sum(1).clamp_min(1e-12).reshape(-1, *([1] * (feat.dim() - 1)))
            g_feat = (feat - feat_x) * (2.0 / n) / ref
        e = emb.flatten(1)
        norm = e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        e_hat = e / norm
        cos = (e_hat * emb_x).sum(1, keepdim=True)
        g_emb = ((emb_x - cos * e_hat) * (self.lam_emb / n) / norm).reshape(emb.shape)
        return g_logits, g_feat, g_emb

    def forward(self, x_star, m, x, feat_x, emb_x, y, alpha, theta=None):
        with torch.enable_grad():
            x_star = x_star.detach().requires_grad_(True)
            if self.diversity:  # one warp and one shallow pass over [x*; x] (the reference moves too)
                n = x_star.shape[0]
                warped = affine_warp(torch.cat([x_star, x]), torch.cat([theta, theta]))
                logits, feat, emb, feat_x = paired_parts(self.classifier, warped, n)
            else:
                logits, feat, emb = parts(self.classifier, x_star)
            grads = self.output_grads(logits.detach(), feat.detach(), emb.detach(), feat_x, emb_x, y)
            outs = [logits, feat, emb] if emb is not logits else [logits, feat]
            if emb is logits:
                grads = (grads[0] + grads[2], grads[1])
            (grad,) = torch.autograd.grad(outs, x_star, grad_outputs=list(grads))
        grad = smooth(grad, self.kernel)
        scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        m_next = m * self.mu + grad / scale
        if self.update == "sign":
            direction = m_next.sign()
        else:
            direction = m_next / m_next.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        x_next = (x_star.detach() + alpha * direction).clamp(0.0, 1.0)
        return torch.minimum(torch.maximum(x_next, x - self.eps), x + self.eps), m_next


class FMDBase(StepProtector):
    """FMD's host side: the clean prediction, feature map and embedding (``prepare``), the
    uniform start in the eps-ball, the step-size schedule, the diversity draws and the
    loop; the step is the subclass's: :class:`FMDStep` here, the ``fmd-step`` program on
    the device.

    Args:
        config: :class:`FMDConfig`.
        step: ``(x_star, m, x, feat_x, emb_x, y, alpha[, theta]) -> (x_star_next, m_next)``.
        prepare: ``x -> (logits, feat_x, emb_x)`` of the clean image.
        in_channels: channels of the images.
    """

    method = "fmd"
    Config = FMDConfig
    PRESETS = {
        "low": {"eps": 8.0, "alpha": 3.0},
        "mid": {"eps": 16.0, "alpha": 6.0},
        "high": {"eps": 24.0, "alpha": 9.0},
    }

    def __init__(self, config: FMDConfig | None, step, prepare, in_channels: int = 3):
        super().__init__(config, step)
        self.prepare = prepare
        self.in_channels = in_channels

    def alphas(self) -> list[float]:
        """The step size of each step, [0,1] units."""
        a, n = self.config.alpha / 255.0, self.config.steps
        if self.config.alpha_schedule == "constant" or n == 1:
            return [a] * n
        lo = a / 8
        return [lo + (a - lo) * 0.5 * (1 + math.cos(math.pi * i / (n - 1))) for i in range(n)]

    def start(self, x, rng):
        with torch.no_grad():
            logits, feat_x, emb_x = self.prepare(x)
            y = logits.argmax(1)
        u = torch.rand(x.shape, generator=rng, device=x.device)
        x_star = (x + (2 * u - 1) * (self.config.eps / 255.0)).clamp(0.0, 1.0)  # MSE grad is 0 at x
        return x_star, (x, feat_x, emb_x, y)

    def draws(self, x, rng):
        d = self.config.diversity
        if not d:
            return ()
        return (random_affine_theta(x.shape[0], 60.0 * d, d, d, generator=rng, device=x.device),)

    def _protect(self, images, rng):
        x = images.to(self.config.device)
        x_t, fixed = self.start(x, rng)
        m = torch.zeros_like(x_t)
        for a in self.alphas():
            alpha = torch.full((1,), a, device=x.device)
            x_t, m = self.step(x_t, m, *fixed, alpha, *self.draws(x, rng))
        return x_t.to(images.device)


@register_protector
class FMDProtector(FMDBase):
    """FMD through one authorized classifier, eager.

    Args:
        classifier: module returning ``(logits, feature_map)`` (:class:`LayerTap`,
            :class:`GalleryClassifier`).
        config: :class:`FMDConfig`.
        in_channels: channels of the images (3 for photos, 1 for Fashion-MNIST).
    """

    def __init__(self, classifier: nn.Module, config: FMDConfig | None = None, in_channels: int = 3):
        cfg = config if config is not None else FMDConfig()
        if not isinstance(cfg, FMDConfig):
            raise TypeError(f"{type(self).__name__} takes an FMDConfig, got {type(cfg).__name__}")
        self.classifier = classifier.eval().to(cfg.device)
        kernel = None if cfg.kernel == "none" else ti_kernel(cfg.kernel, cfg.kernel_length, in_channels)
        step = FMDStep(self.classifier, cfg.eps / 255.0, cfg.lam, cfg.lam_emb, cfg.feature_loss, cfg.mu,
                       cfg.diversity > 0, kernel, cfg.update)
        super().__init__(cfg, step, FMDPrepare(self.classifier), in_channels)
