"""Metrics that measure a protector (Pu et al., "Facial Data Minimization", Sec. 6.2).

* :func:`strict_accuracy` — the paper's strict recognition accuracy (Eq. 10);
* :func:`identification_top1` — closed-set identification against an enrolled gallery;
* :func:`wilson` — the 95 % Wilson interval of a proportion (every report cell with its n);
* :func:`above_chance_p` — the one-sided exact binomial p-value of ``k`` right of ``n``
  against guessing (whether a count is "at chance");
* :func:`attribute_cossim` — CosSim of attribute vectors (Eq. 11) and
  :func:`attribute_abs_diff` for scalar attributes (age, "absolute difference");
* :func:`ssim`, :func:`psnr` — per-image SSIM (pytorch-msssim) and PSNR (torchmetrics);
* :func:`up_score` — UP(sigma, kappa) (Eq. 9) with a documented substitute for LPIPS;
* :data:`TRANSFORMS` / :func:`apply_transform` — what a server may do to an upload before
  recognising it (JPEG re-encoding, down-scaling, blur), for the robustness attack.

Images are float tensors ``[N, 3, H, W]`` in [0, 1]; embeddings ``[N, D]``.

Reading of Eq. 10. The equation is printed as
``acc = E{ I(cos(f(x~1), f(x1)) > k) and I(cos(f(x~1), f(x2)) > k) = y }``. Read as one
predicate compared with ``y`` ("joint"), an unauthorized model that sees pure noise
predicts "different" for every pair and scores 50 % on balanced pairs, which cannot give
the < 10 % unauthorized accuracies of the paper's Table 7. The reading consistent with
Table 7 and with the text ("not only considers the distance between x~ and its original
x but also ... the distance to x_j") is a gate: a pair counts as correct iff the
protected image is still recognised as its own original *and* its verification against
``x2`` is right::

    correct = [cos(f(x~1), f(x1)) > k]  and  ([cos(f(x~1), f(x2)) > k] == y)

That "gate" reading is the default (``metric = strict_accuracy`` in the results); the
"joint" reading is available (``reading="joint"``) and reported as
``strict_accuracy_joint``. On clean data (x~1 = x1) both equal plain verification accuracy
at threshold ``k``.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from photoveil.errors import InvalidInput
from photoveil.imageops import rescale

KAPPA = 0.2  # the paper's face-similarity threshold for Eq. 10
READINGS = ("gate", "joint")


# ------------------------------------------------------------------------------ embeddings
def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of ``[N, D]`` (or ``[N, ...]``, flattened) tensors -> ``[N]``."""
    if a.shape != b.shape:
        raise InvalidInput(f"cosine needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-12).float()


def strict_correct(cos_self: torch.Tensor, cos_pair: torch.Tensor, same: torch.Tensor,
                   kappa: float = KAPPA, reading: str = "gate") -> torch.Tensor:
    """Per-pair correctness (bool ``[N]``) of Eq. 10 (see the module docstring for readings).

    Args:
        cos_self: ``cos(f(x~1), f(x1))`` per pair.
        cos_pair: ``cos(f(x~1), f(x2))`` per pair.
        same: ``y`` — True where x1 and x2 show the same person.
        kappa: similarity threshold (paper: 0.2).
        reading: ``gate`` (default) or ``joint``.
    """
    if reading not in READINGS:
        raise InvalidInput(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")
    cos_self, cos_pair = torch.as_tensor(cos_self), torch.as_tensor(cos_pair)
    same = torch.as_tensor(same, dtype=torch.bool)
    if not cos_self.shape == cos_pair.shape == same.shape or cos_self.dim() != 1:
        raise InvalidInput(f"cos_self, cos_pair and same must be [N] alike, got {tuple(cos_self.shape)}, "
                           f"{tuple(cos_pair.shape)}, {tuple(same.shape)}")
    own = cos_self > kappa
    match = cos_pair > kappa
    if reading == "gate":
        return own & (match == same)
    return (own & match) == same


def strict_accuracy(cos_self, cos_pair, same, kappa: float = KAPPA, reading: str = "gate") -> float:
    """Eq. 10: the fraction of pairs counted correct by :func:`strict_correct`."""
    correct = strict_correct(cos_self, cos_pair, same, kappa, reading)
    if correct.numel() == 0:
        raise InvalidInput("strict accuracy needs at least one pair")
    return correct.float().mean().item()


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    if n <= 0 or p is None or math.isnan(p):
        return float("nan"), float("nan")
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def above_chance_p(k: int, n: int, chance: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, chance)``: the one-sided exact p-value of ``k``
    right answers out of ``n`` if the recognizer only guessed. Above 0.05, ``k`` is
    consistent with guessing (e.g. 2 of 20 at chance 1/20: 0.26; 4 of 20: 0.016)."""
    if not (0 <= k <= n) or n <= 0 or not (0.0 < chance < 1.0):
        raise InvalidInput(f"above_chance_p needs 0 <= k <= n, n >= 1 and 0 < chance < 1; got k={k}, n={n}, "
                           f"chance={chance}")
    if k == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * chance ** i * (1 - chance) ** (n - i) for i in range(k, n + 1)))


def identification_top1(gallery: torch.Tensor, gallery_labels: torch.Tensor,
                        queries: torch.Tensor, query_labels: torch.Tensor) -> float:
    """Top-1 identification: each query is assigned the label of its most cosine-similar
    gallery embedding; the fraction assigned their own identity."""
    if len(queries) == 0 or len(gallery) == 0:
        raise InvalidInput("identification needs at least one gallery and one query embedding")
    sims = F.normalize(queries.flatten(1).float(), dim=1) @ F.normalize(gallery.flatten(1).float(), dim=1).T
    predicted = torch.as_tensor(gallery_labels)[sims.argmax(1)]
    return (predicted == torch.as_tensor(query_labels)).float().mean().item()


# ------------------------------------------------------------------------------ attributes
def attribute_cossim(original: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Eq. 11 per image: ``cos(A(x~), A(x))`` of attribute vectors ``[N, K]`` (K >= 2) -> ``[N]``."""
    original, protected = torch.as_tensor(original), torch.as_tensor(protected)
    if original.dim() != 2 or original.shape[1] < 2:
        raise InvalidInput(f"attribute vectors must be [N, K>=2], got {tuple(original.shape)}")
    return cosine(original, protected)


def attribute_abs_diff(original: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Absolute difference of a scalar attribute (age) per image -> ``[N]`` (higher = more private)."""
    original, protected = torch.as_tensor(original).float(), torch.as_tensor(protected).float()
    return (original.reshape(len(original), -1)[:, 0] - protected.reshape(len(protected), -1)[:, 0]).abs()


# ------------------------------------------------------------------------------ image quality
def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise InvalidInput(f"image metrics need two [N, C, H, W] batches of one shape, got "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``[N]`` (pytorch-msssim, Gaussian window 11 / sigma 1.5, data range 1).

    Images smaller than the window use the largest odd window that fits (>= 3)."""
    from pytorch_msssim import ssim as _ssim

    _check_pair(x, y)
    win = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))
    if win < 3:
        raise InvalidInput(f"SSIM needs images of at least 3x3 pixels, got {tuple(x.shape[-2:])}")
    return _ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=win)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB ``[N]`` (torchmetrics, data range 1); identical images give +inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(x, y)
    return peak_signal_noise_ratio(x.float(), y.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def up_score(embed: Callable[[torch.Tensor], torch.Tensor], original: torch.Tensor, protected: torch.Tensor,
             sigma: float = 0.1, kappa: float = 0.3, draws: int = 1, seed: int = 0) -> dict[str, float]:
    """UP(sigma, kappa) of Eq. 9, the paper's utility + privacy measure (higher is better).

    ``x ~ N(X, sigma^2)``, ``x~ ~ N(X~, sigma^2)`` (environmental noise, pixel units in
    [0, 1], clamped to the pixel range), ``draws`` samples each::

        utility = E[ I(cos(f(x~), f(x)) > kappa) ]          f: the authorized recognizer
        privacy = E[ 1 - SSIM(x, x~) ] clamped to [0, 1]     (substitute for LPIPS)

    Substitute: the paper measures privacy with LPIPS (VGG features); LPIPS weights cannot
    be downloaded offline here, so privacy is the structural dissimilarity ``1 - SSIM``
    (0 = identical images, 1 = no shared structure), which like LPIPS is 0 for identical
    images and grows as the human-visible content diverges. Returns
    ``{"utility", "privacy", "up"}`` with ``up = utility + privacy``.
    """
    if sigma < 0:
        raise InvalidInput(f"UP sigma must be >= 0 (pixel noise std in [0, 1] units), got {sigma}")
    _check_pair(original, protected)
    gen = torch.Generator().manual_seed(seed)
    util, priv = [], []
    for _ in range(max(1, draws)):
        x = (original + sigma * torch.randn(original.shape, generator=gen)).clamp(0, 1)
        xt = (protected + sigma * torch.randn(protected.shape, generator=gen)).clamp(0, 1)
        with torch.no_grad():
            util.append((cosine(embed(xt), embed(x)) > kappa).float())
        priv.append((1.0 - ssim(x, xt)).clamp(0.0, 1.0))
    utility, privacy = torch.cat(util).mean().item(), torch.cat(priv).mean().item()
    return {"utility": utility, "privacy": privacy, "up": utility + privacy}


# ------------------------------------------------------------------------------ transforms
def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode every image as JPEG at ``quality`` (Pillow, 4:2:0 subsampling) and decode."""
    import numpy as np
    from PIL import Image

    if not 1 <= quality <= 100:
        raise InvalidInput(f"JPEG quality must be in [1, 100], got {quality}")
    out = []
    for img in images:
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            dec = np.asarray(im.convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out).to(images.dtype)


def blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur with std ``sigma`` pixels (kernel 2*ceil(3 sigma)+1, reflect padding)."""
    from torchvision.transforms.functional import gaussian_blur

    if not 0 < sigma <= 10:
        raise InvalidInput(f"blur sigma must be in (0, 10] pixels, got {sigma}")
    k = 2 * int(torch.tensor(3.0 * sigma).ceil()) + 1
    k = min(k, 2 * (min(images.shape[-2:]) // 2) - 1)
    return gaussian_blur(images, [k, k], [sigma, sigma])


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "jpeg95": lambda x: jpeg(x, 95),
    "jpeg75": lambda x: jpeg(x, 75),
    "jpeg50": lambda x: jpeg(x, 50),
    "down0.5": lambda x: rescale(x, 0.5),
    "blur1": lambda x: blur(x, 1.0),
}


def apply_transform(name: str, images: torch.Tensor) -> torch.Tensor:
    """Apply robustness transform ``name`` (one of :data:`TRANSFORMS`, or ``none``)."""
    if name == "none":
        return images
    if name not in TRANSFORMS:
        raise InvalidInput(f"unknown transform {name!r}; accepted: none, {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name](images)
