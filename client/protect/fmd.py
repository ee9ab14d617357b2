"""``--method fmd``: Feature-Map Distortion (Chai et al., "Only My Model On My Data", Alg. 1, Eq. 5).

Perturb the image inside an L-inf ball so that an internal feature map of the authorized
model moves as far as possible (which transfers to, and breaks, unauthorized models with
similar early layers) while the authorized model's own prediction is held::

    J = MSE(f_l(x), f_l(x*)) - lambda * CE(f(x*), y)
    x*_0 ~ U[x - eps, x + eps]
    x*_{i+1} = clip_[x-eps, x+eps] clip_[0,1]( x*_i + alpha * sign(grad J) )

``y`` is the authorized model's own prediction on the clean image: the phone does not know
the true label, and on the correctly classified images the paper evaluates it equals the
ground truth. Paper defaults (0-255 units): eps 16, alpha 4, N 100, lambda 1.

The authorized classifier is any module returning ``(logits, feature_map)``:
:class:`LayerTap` wraps a classifier (e.g. a zoo model) and a named layer;
:class:`GalleryClassifier` turns a face recognizer into a classifier over enrolled
identities (scaled cosine to each identity's embedding centroid) with the feature map at
a split point.

Shapes: images ``[N,C,H,W]`` float in [0,1].

Example::

    >>> clf = LayerTap(zoo.checkpoints.load_trained("resnet18"), "layer2")
    >>> fmd = FMDProtector(clf, FMDConfig(eps=16, seed=0), in_channels=1)
    >>> x_star = fmd.protect(images)           # ||x_star - images||_inf <= 16/255
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.client.protect.base import register_protector
from photoveil.client.protect.configs import FMDConfig
from photoveil.client.protect.steps import StepProtector
from photoveil.errors import InvalidInput


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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.shallow(x)
        emb = F.normalize(self.rest(feat), dim=1)
        return self.scale * emb @ self.centroids.T, feat


class FMDStep(nn.Module):
    """One FMD iteration: ``forward(x_star, x, feat_x, y) -> x_star_next`` (pure; exported
    as the on-device step program). ``feat_x`` is ``f_l(x)``, computed once by the host."""

    def __init__(self, classifier: nn.Module, eps: float, alpha: float, lam: float):
        super().__init__()
        self.classifier, self.eps, self.alpha, self.lam = classifier, eps, alpha, lam

    def loss(self, x_star: torch.Tensor, feat_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``J = MSE(f_l(x*), f_l(x)) - lambda * CE(f(x*), y)`` (what the step ascends)."""
        logits, feat = self.classifier(x_star)
        return F.mse_loss(feat, feat_x) - self.lam * F.cross_entropy(logits, y)

    def output_grads(self, logits, feat, feat_x, y):
        """``(dJ/dlogits, dJ/dfeat)`` of :meth:`loss`, written out: ``-lambda (softmax - onehot) / N``
        and ``2 (feat - feat_x) / numel``. The step back-propagates these instead of
        differentiating the loss, so the exported program has no loss reductions (which
        XNNPACK does not run) — only a softmax and elementwise ops."""
        classes = torch.arange(logits.shape[1], device=logits.device)
        onehot = (classes[None, :] == y[:, None]).to(logits.dtype)  # traceable one-hot
        g_logits = (torch.softmax(logits, dim=1) - onehot) * (-self.lam / logits.shape[0])
        g_feat = (feat - feat_x) * (2.0 / feat.numel())
        return g_logits, g_feat

    def forward(self, x_star: torch.Tensor, x: torch.Tensor, feat_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_star = x_star.detach().requires_grad_(True)
            logits, feat = self.classifier(x_star)
            g_logits, g_feat = self.output_grads(logits.detach(), feat.detach(), feat_x, y)
            (grad,) = torch.autograd.grad([logits, feat], x_star, grad_outputs=[g_logits, g_feat])
        x_next = (x_star.detach() + self.alpha * grad.sign()).clamp(0.0, 1.0)
        return torch.minimum(torch.maximum(x_next, x - self.eps), x + self.eps)


class FMDBase(StepProtector):
    """FMD's host side: the clean prediction and feature map (``prepare``), the uniform
    start in the eps-ball and the loop; the step is the subclass's: :class:`FMDStep`
    here, the ``fmd-step`` program on the device.

    Args:
        config: :class:`FMDConfig`.
        step: ``(x_star, x, feat_x, y) -> x_star_next``.
        prepare: ``x -> (logits, feat_x)`` of the clean image.
        in_channels: channels of the images.
    """

    method = "fmd"
    Config = FMDConfig
    PRESETS = {
        "low": {"eps": 8.0, "alpha": 2.0},
        "mid": {"eps": 16.0, "alpha": 4.0},
        "high": {"eps": 24.0, "alpha": 6.0},
    }

    def __init__(self, config: FMDConfig | None, step, prepare, in_channels: int = 3):
        super().__init__(config, step)
        self.prepare = prepare
        self.in_channels = in_channels

    def start(self, x, rng):
        with torch.no_grad():
            logits, feat_x = self.prepare(x)
            y = logits.argmax(1)
        u = torch.rand(x.shape, generator=rng, device=x.device)
        x_star = (x + (2 * u - 1) * (self.config.eps / 255.0)).clamp(0.0, 1.0)  # MSE grad is 0 at x
        return x_star, (x, feat_x, y)


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
        step = FMDStep(self.classifier, cfg.eps / 255.0, cfg.alpha / 255.0, cfg.lam)
        super().__init__(cfg, step, self.classifier, in_channels)
