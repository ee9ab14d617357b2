"""Reconstruction attacks on uploaded shallow features (Pu et al., Sec. 3 "Level 1 / Level 2",
Eq. 1-4, Table 6).

* **Level 1** (black box, the attacker owns image/feature pairs): a small U-Net decoder
  ``R`` is trained under Lightning on ``(x, E_c(x))`` pairs of *training* identities to
  minimise ``||x - R(E_c(x))||^2`` (Eq. 1) and is then applied to the features of *test*
  identities (:class:`FeatureDecoder`, :func:`train_decoder`).
* **Level 2** (white box, the attacker owns ``E_c``): optimisation inversion
  ``x^_{i+1} = clip_[0,1](x^_i - alpha_i sign(grad J))`` with
  ``J = ||E_c(x^) - z||_2 / ||z||_2 + lambda_tv TV_beta(x^)`` (Eq. 2-4; the feature term is
  divided by ``||z||`` and TV is averaged over pixels so one ``lambda_tv`` fits every model;
  ``alpha_i`` decays linearly from ``alpha`` to ``alpha / 10``) (:func:`invert`).

Reconstructions are scored against the *original* image (:func:`score`): SSIM, PSNR (lower =
better privacy) and, with the authorized recognizer ``f``, COS = ``cos(f(x^), f(x))`` and
SRRA = the fraction with COS > kappa (higher = the reconstruction is still recognised).

Features compared (Table 6): unprotected ``E_c(x)``; random noise ``E_c(x) + shuffle(d)``
where ``d = E_c(x~) - E_c(x)`` is the protector's feature change with its elements randomly
permuted per image (same amplitude, no structure, as the paper describes); protected
``E_c(x~)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput

DECODER_FORMAT = "photoveil-recon-decoder/1"


# ------------------------------------------------------------------------------ Level 1
def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@dataclass
class DecoderConfig:
    """Architecture of :class:`FeatureDecoder` (stored in its checkpoint).

    Attributes:
        in_channels, feature_size: shape ``[C, h, w]`` of the shallow features.
        image_size: ``(H, W)`` of the reconstructed image.
        width: channels at the feature resolution (halved per 2x up-sampling, >= 8).
    """

    in_channels: int
    feature_size: tuple[int, int]
    image_size: tuple[int, int]
    width: int = 48

    def __post_init__(self) -> None:
        self.feature_size, self.image_size = tuple(self.feature_size), tuple(self.image_size)
        if self.in_channels < 1 or min(self.feature_size) < 1 or min(self.image_size) < 4:
            raise InvalidInput(f"bad decoder shapes: features {self.in_channels}x{self.feature_size}, "
                               f"image {self.image_size}")
        if not 8 <= self.width <= 512:
            raise InvalidInput(f"decoder width must be in [8, 512], got {self.width}")


def up_plan(feature: int, image: int) -> list[tuple[int, int]]:
    """``(kernel, padding)`` of the stride-2 transposed convolutions that take one feature
    side to the image side: exact doublings (4, 1), the last one sized so the output lands on
    ``image`` exactly (``2 h - 2 + k``), like the VALID strided convs the shallow models use.
    ``[]`` when the sides differ by less than 1.5x; a last step that would need a kernel
    outside [2, 16] keeps (4, 1) and the decoder resizes the rest."""
    n = max(0, round(math.log2(image / feature))) if image / feature >= 1.5 else 0
    plan, h = [], feature
    for i in range(n):
        k = image - 2 * h + 2
        if i == n - 1 and 2 <= k <= 16:
            plan.append((k, 0))
            h = image
        else:
            plan.append((4, 1))
            h *= 2
    return plan


class FeatureDecoder(nn.Module):
    """Shallow features ``[N, C, h, w]`` -> image ``[N, 3, H, W]`` in [0, 1].

    A two-level U-Net at the feature resolution (input BatchNorm, so raw feature scales do
    not matter), then stride-2 transposed convolutions sized by :func:`up_plan`, plus a
    *linear* path of the same geometry straight from the normalised features. Learned
    up-sampling on the encoder's own grid and the linear path make the decoder a close
    inverse of ``E_c`` rather than a face prior: it reconstructs what the features carry
    (for PMT's uploads, the obfuscated image), which a bilinear, sigmoid decoder did not -
    it drifted to a smooth mean face on every input it had not seen. Output: ``0.5 +``
    both paths, clamped to [0, 1] outside training.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.width
        self.norm = nn.BatchNorm2d(c)
        self.inc = nn.Sequential(_conv_bn(c, w), _conv_bn(w, w))
        self.down = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w))
        self.upc = nn.Sequential(_conv_bn(3 * w, w), _conv_bn(w, w))
        (fh, fw), (ih, iw) = config.feature_size, config.image_size
        ph, pw = up_plan(fh, ih), up_plan(fw, iw)
        n = min(len(ph), len(pw))
        plan = [((kh, kw), (qh, qw)) for (kh, qh), (kw, qw) in zip(ph[-n:], pw[-n:])] if n else []
        stages, lin, ch = [], [], w
        for i, (k, pad) in enumerate(plan):
            last = i == len(plan) - 1
            nxt = 3 if last else max(8, ch // 2)
            stages.append(nn.ConvTranspose2d(ch, nxt, k, 2, pad))
            if not last:
                stages.append(nn.ReLU(inplace=True))
            lin.append(nn.ConvTranspose2d(c if i == 0 else 3, 3, k, 2, pad))
            ch = nxt
        if not plan:
            stages.append(nn.Conv2d(ch, 3, 3, padding=1))
            lin.append(nn.Conv2d(c, 3, 3, padding=1))
        self.ups, self.lin = nn.Sequential(*stages), nn.Sequential(*lin)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.norm(z)
        e1 = self.inc(z)
        e2 = self.down(e1)
        y = self.upc(torch.cat([e1, F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)], 1))
        y = self.ups(y) + self.lin(z) + 0.5
        if tuple(y.shape[-2:]) != self.config.image_size:
            y = F.interpolate(y, size=self.config.image_size, mode="bilinear", align_corners=False)
        return y if self.training else y.clamp(0.0, 1.0)


def _lightning_module(decoder: FeatureDecoder, lr: float, epochs: int):
    import lightning as L

    class DecoderModule(L.LightningModule):
        """Eq. 1 training of the reconstruction model: MSE between x and R(z)."""

        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def training_step(self, batch, _):
            x, z = batch
            loss = F.mse_loss(self.decoder(z), x)
            self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.decoder.parameters(), lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
            return [opt], [sched]

    return DecoderModule()


def fit_cpu(module, data, epochs: int, batch_size: int, seed: int, progress: bool, **trainer_kwargs) -> None:
    """``Trainer.fit`` of a LightningModule on ``data`` on the CPU: seeded shuffled batches
    (the last partial one dropped when there are several), no logger, no checkpoints, and
    without Lightning's start-up banners (GPU/TPU availability, tips: noise in a CLI run)."""
    import logging
    import warnings

    import lightning as L

    loader = torch.utils.data.DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True,
                                         drop_last=len(data) > batch_size,
                                         generator=torch.Generator().manual_seed(seed))
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=progress,
                                enable_model_summary=False, **trainer_kwargs)
            trainer.fit(module, loader)
    finally:
        for q, lvl in zip(quiet, levels):
            q.setLevel(lvl)


def train_decoder(images: torch.Tensor, features: torch.Tensor, epochs: int = 30, batch_size: int = 16,
                  lr: float = 3e-3, width: int = 48, seed: int = 0, progress: bool = True) -> FeatureDecoder:
    """Train a Level-1 reconstruction decoder on ``(images [N,3,H,W], features [N,C,h,w])``.

    Runs a Lightning ``Trainer`` on the CPU (no logger, no checkpoints); returns the decoder
    in eval mode.
    """
    if len(images) != len(features) or len(images) < 2:
        raise InvalidInput(f"decoder training needs >= 2 matching image/feature pairs, got "
                           f"{len(images)} images and {len(features)} features")
    if not 1 <= epochs <= 10000:
        raise InvalidInput(f"decoder epochs must be in [1, 10000], got {epochs}")
    cfg = DecoderConfig(features.shape[1], tuple(features.shape[-2:]), tuple(images.shape[-2:]), width)
    torch.manual_seed(seed)
    decoder = FeatureDecoder(cfg)
    data = torch.utils.data.TensorDataset(images.float(), features.float())
    fit_cpu(_lightning_module(decoder, lr, epochs), data, epochs, batch_size, seed, progress, deterministic=False)
    return decoder.eval()


def reconstruct(decoder: FeatureDecoder, features: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``R(z)`` for a batch of features (no grad, eval mode)."""
    decoder.eval()
    with torch.no_grad():
        return torch.cat([decoder(z.float()) for z in features.split(batch_size)])


def save_decoder(path, decoder: FeatureDecoder, **meta) -> None:
    """Checkpoint with the architecture config next to the weights (``weights_only``-loadable)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = asdict(decoder.config)
    cfg["feature_size"], cfg["image_size"] = list(cfg["feature_size"]), list(cfg["image_size"])
    torch.save({"format": DECODER_FORMAT, "config": cfg, "meta": meta,
                "state_dict": {k: v.detach().cpu() for k, v in decoder.state_dict().items()}}, path)


def load_decoder(path) -> tuple[FeatureDecoder, dict]:
    """Load a :func:`save_decoder` checkpoint with ``weights_only=True``."""
    from pathlib import Path

    from photoveil.errors import NotFound

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"decoder checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != DECODER_FORMAT:
        raise InvalidInput(f"{str(path)!r} is not a photoveil reconstruction decoder ({DECODER_FORMAT})")
    decoder = FeatureDecoder(DecoderConfig(**ckpt["config"]))
    decoder.load_state_dict(ckpt["state_dict"])
    return decoder.eval(), dict(ckpt.get("meta") or {})


# ------------------------------------------------------------------------------ Level 2
def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Eq. 3 per image, averaged over pixels: ``mean((dx^2 + dy^2)^(beta/2))`` -> ``[N]``."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2.0).flatten(1).mean(1)


def invert(shallow: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, image_shape,
           steps: int = 200, alpha: float = 4.0 / 255.0, tv_weight: float = 0.05, beta: float = 2.0,
           batch_size: int = 16, progress: bool = True, desc: str = "invert") -> torch.Tensor:
    """Level-2 white-box inversion (Eq. 2-4) of ``features`` through ``shallow``.

    Args:
        shallow: ``E_c``: images ``[N,3,H,W]`` -> split-point features.
        features: target features ``z``.
        image_shape: ``(3, H, W)`` of the images to reconstruct.
        steps, alpha: signed-gradient iterations and the initial step (pixel units in [0, 1]).
        tv_weight, beta: the TV prior's weight and exponent.

    Starts from mid-grey; returns reconstructions ``[N,3,H,W]`` in [0, 1].
    """
    from tqdm.auto import tqdm

    if steps < 1 or alpha <= 0 or tv_weight < 0:
        raise InvalidInput(f"inversion needs steps >= 1, alpha > 0, tv_weight >= 0; got {steps}, {alpha}, {tv_weight}")
    outs = []
    chunks = list(features.split(batch_size))
    bar = tqdm(total=steps * len(chunks), desc=desc, unit="step", disable=not progress or None, leave=False)
    for z in chunks:
        z = z.float()
        znorm = z.flatten(1).norm(dim=1).clamp_min(1e-8)
        x = torch.full((len(z), *image_shape), 0.5)
        for i in range(steps):
            a = alpha * (1.0 - 0.9 * i / max(1, steps - 1))
            x.requires_grad_(True)
            dist = (shallow(x) - z).flatten(1).norm(dim=1) / znorm
            j = (dist + tv_weight * total_variation(x, beta)).sum()
            (grad,) = torch.autograd.grad(j, x)
            x = (x.detach() - a * grad.sign()).clamp(0.0, 1.0)
            bar.update(1)
        outs.append(x.detach())
    bar.close()
    return torch.cat(outs)


# ------------------------------------------------------------------------------ features + scores
def noise_features(clean: torch.Tensor, protected: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``clean + shuffle(protected - clean)``: random noise with exactly the amplitude
    distribution of the protector's feature change, its order disrupted per image."""
    if clean.shape != protected.shape:
        raise InvalidInput(f"feature shapes differ: {tuple(clean.shape)} vs {tuple(protected.shape)}")
    gen = torch.Generator().manual_seed(seed)
    delta = (protected - clean).flatten(1)
    perm = torch.stack([torch.randperm(delta.shape[1], generator=gen) for _ in range(len(delta))])
    return clean + torch.gather(delta, 1, perm).view_as(clean)


def score(recon: torch.Tensor, original: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
          kappa: float = 0.2) -> dict[str, float]:
    """Table 6 figures of reconstructions vs originals: ``ssim``, ``psnr`` and, with the
    authorized recognizer ``embed``, ``cos`` and ``srra`` (fraction with cos > kappa)."""
    from photoveil.evaluation.metrics import cosine, psnr, ssim

    out = {"ssim": ssim(recon, original).mean().item(),
           "psnr": psnr(recon, original).clamp(max=100.0).mean().item()}
    if embed is not None:
        with torch.no_grad():
            cos = cosine(embed(recon), embed(original))
        out["cos"] = cos.mean().item()
        out["srra"] = (cos > kappa).float().mean().item()
    return out
