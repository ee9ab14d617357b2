"""The human-readability witness: is the face still there after what an eye does for free?

SSIM to the original is the wrong witness for visual privacy: a colour cast and a pattern
of fine lines drive it to ~0 while a person still reads the face (issue 20). The witness
first applies the cheap normalisation a viewer does without thinking, to *both* images,
then compares them:

0. (the out-of-focus view :data:`BLURRED` only) a Gaussian low-pass of the RGB image, std
   ``blur`` x the shorter side: what squinting, a thumbnail or a glance does;
1. per-channel standardisation of each image (zero mean, unit variance per channel):
   removes a colour cast, a brightness / contrast change and a per-channel gain (not in
   :data:`BLURRED`, which takes the luminance of the image as it is);
2. a 3x3 median filter (reflect padding): removes isolated fine lines and salt-and-pepper;
3. grayscale (ITU-R BT.601 luma of the standardised channels), standardised again;
4. area down-scaling by ``scale`` (default 1/2, the viewing-distance step of Wang et al.'s
   SSIM reference code): averages away period-2 stripes that a median keeps; the far view
   (:data:`FAR`, 1/4) averages away coarser patterns too;
5. a fixed contrast stretch of +-3 standard deviations onto [0, 1].

On the normalised pair:

* :func:`readable_ssim` — SSIM (pytorch-msssim, 11x11 Gaussian window) of the normalised
  original to the normalised protected image or to its negative, whichever is larger (an
  inverted face is as readable as the face), floored at 0 (``readable_ssim_far``: the far
  view; its floors are higher — noise ~0.1, another face ~0.3 — on the smaller image);
* :func:`edge_similarity` — Pearson correlation of the Sobel gradient-magnitude maps
  (sign-free, so inversion does not hide a face either); noise gives ~0, the same face 1;
* :func:`recognizer_view` — the normalised image as a 3-channel picture at the input size,
  what an off-the-shelf recognizer / attribute estimator is run on (``photoveil evaluate``
  reports their figures as ``readable_top1`` and ``readable_*`` attribute metrics).

Everything is differentiable (the median routes its gradient to the selected pixel), so
the generator training uses :func:`readability_term` as a loss term. Images are float
``[N, 3, H, W]`` in [0, 1] with ``H * scale, W * scale >= 11``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
STRETCH_SIGMAS = 3.0
EPS = 1e-5


@dataclass(frozen=True)
class Normalisation:
    """The witness' normalisation settings (single source of the defaults)."""

    median: int = 3        # median filter size (odd, >= 1; 1 = off)
    scale: float = 0.5     # area down-scaling factor in (0, 1]
    blur: float = 0.0      # Gaussian low-pass std as a fraction of the shorter side, [0, 0.1]; 0 = off
    per_channel: bool = True  # standardise each colour channel before the grayscale (False: luminance as seen)

    def __post_init__(self) -> None:
        if not (isinstance(self.median, int) and self.median >= 1 and self.median % 2 == 1):
            raise ValueError(f"median must be an odd int >= 1, got {self.median!r}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale!r}")
        if not 0 <= self.blur <= 0.1:
            raise ValueError(f"blur must be in [0, 0.1], got {self.blur!r}")


DEFAULT = Normalisation()
FAR = Normalisation(scale=0.25)
"""The same normalisation viewed from twice as far (quarter size): averages away a stripe or
dot pattern laid over the face that the half-size view keeps. A generator trained against
:data:`DEFAULT` alone learned such a pattern (readable SSIM 0.12 at half size, 0.38 at
quarter size, where another person's face scores 0.29), so evaluations report both views."""
BLURRED = Normalisation(median=1, blur=1 / 60, per_channel=False)
"""The out-of-focus view: a Gaussian low-pass (std 1/60 of the side, 2.5 px on a 150-px face),
no median, and the luminance of the image as it is (no per-channel standardisation). A fine
dither laid over a dimmed face survives the median (which even aliases it into coarse bars that
dominate the standardised image) and both down-scaled views, while an eye that squints sees the
face through it: the blur removes the dither and keeps the face (face generators trained against
the other two views alone scored 0.08-0.11 in both and 0.66-0.70 in this one). And a pattern
in a colour channel of little variance, which per-channel standardisation blows up to dominate
the image, is faint in the luminance a person sees (a generator trained against this view with
per-channel standardisation scored 0.09 there and 0.41 in the luminance, above another
person's face, 0.37; README, "Readability witness")."""


def low_pass(x: torch.Tensor, blur: float) -> torch.Tensor:
    """Gaussian blur of ``[N, C, H, W]`` with std ``blur * min(H, W)`` pixels (reflect padding)."""
    if blur == 0:
        return x
    from torchvision.transforms.functional import gaussian_blur

    sigma = blur * min(x.shape[-2:])
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # odd, < the side
    return gaussian_blur(x, [k, k], [sigma, sigma])


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: zero mean, unit variance."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + EPS)


def median_filter(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """``k x k`` median per channel of ``[N, C, H, W]`` (reflect padding); ``k=1`` is the identity."""
    if k == 1:
        return x
    n, c, h, w = x.shape
    p = F.unfold(F.pad(x, [k // 2] * 4, mode="reflect"), k)
    return p.view(n, c, k * k, h, w).median(dim=2).values


def normalise(x: torch.Tensor, settings: Normalisation = DEFAULT) -> torch.Tensor:
    """The witness normalisation (module doc, steps 1-5): ``[N, 3, H, W]`` -> ``[N, 1, h, w]`` in [0, 1]."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected [N, 3, H, W] images, got {tuple(x.shape)}")
    z = low_pass(x.float(), settings.blur)
    z = median_filter(_standardise(z) if settings.per_channel else z, settings.median)
    g = (z * torch.tensor(LUMA, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    g = _standardise(g)
    if settings.scale < 1:
        h, w = x.shape[-2:]
        g = F.interpolate(g, size=(max(1, round(h * settings.scale)), max(1, round(w * settings.scale))),
                          mode="area")
    return (0.5 + g / (2 * STRETCH_SIGMAS)).clamp(0, 1)


def readable_ssim(x: torch.Tensor, x_prot: torch.Tensor, settings: Normalisation = DEFAULT,
                  signed: bool = False) -> torch.Tensor:
    """Per image ``[N]``: ``max(SSIM(N(x), N(x')), SSIM(N(x), 1 - N(x')), 0)`` (module doc);
    with ``signed`` the plain ``SSIM(N(x), N(x'))``."""
    from pytorch_msssim import ssim

    a, b = normalise(x, settings), normalise(x_prot, settings)
    s = ssim(a, b, data_range=1.0, size_average=False)
    if signed:
        return s
    inverted = ssim(a, 1 - b, data_range=1.0, size_average=False)
    return torch.maximum(s, inverted).clamp(min=0)


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def gradient_magnitude(g: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``[N, 1, H, W]`` (replicate padding)."""
    k = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1).to(g)
    d = F.conv2d(F.pad(g, [1, 1, 1, 1], mode="replicate"), k)
    return (d.pow(2).sum(1, keepdim=True) + 1e-8).sqrt()


def edge_similarity(x: torch.Tensor, x_prot: torch.Tensor, settings: Normalisation = DEFAULT) -> torch.Tensor:
    """Pearson correlation of the normalised pair's Sobel gradient magnitudes, per image ``[N]``
    (1: the same edges; ~0: unrelated; negative: edges where the original has none)."""
    a = gradient_magnitude(normalise(x, settings)).flatten(1)
    b = gradient_magnitude(normalise(x_prot, settings)).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def recognizer_view(x: torch.Tensor, settings: Normalisation = DEFAULT) -> torch.Tensor:
    """The normalised image as a recognizer input: gray replicated to 3 channels, back at ``x``'s size."""
    g = normalise(x, settings)
    if g.shape[-2:] != x.shape[-2:]:
        g = F.interpolate(g, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return g.expand(-1, 3, -1, -1).contiguous()


def readability_term(x: torch.Tensor, x_prot: torch.Tensor, settings: Normalisation = DEFAULT) -> dict:
    """Loss term for training: mean readable SSIM + mean ``|edge similarity|`` (and both parts)
    under ``settings`` (:data:`DEFAULT`; :data:`FAR` / :data:`BLURRED` for the far / out-of-focus view)."""
    s = readable_ssim(x, x_prot, settings)
    e = edge_similarity(x, x_prot, settings).abs()
    return {"term": s.mean() + e.mean(), "readable_ssim": s.mean().detach(), "readable_edge": e.mean().detach()}


__all__ = ["BLURRED", "DEFAULT", "FAR", "Normalisation", "edge_similarity", "gradient_magnitude", "low_pass",
           "median_filter", "normalise",
           "readability_term", "readable_ssim", "recognizer_view"]
