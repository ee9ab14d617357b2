"""LightningModule training the U-Net perturbation generator against a frozen target and aux.

Algorithm 1 of Ye et al. (MMSys'22): ``x' = clamp(x + U(x))``, the target model must still
classify ``x'`` correctly, the auxiliary model (the adversary's stand-in) must not, and
``x'`` must look unlike ``x`` (low |SSIM|); see :mod:`.losses`.

Only the generator is a registered sub-module: the target and aux critics are frozen,
kept out of ``state_dict`` (checkpoints stay generator-sized, DDP wraps only trainable
weights) and out of ``.train()`` (their BatchNorm statistics stay fixed). They are moved to
the module's device on first use.

Example::

    >>> cfg = GeneratorTrainConfig(target="resnet18", aux="vgg13_bn", width=0.25)
    >>> module = GeneratorModule(cfg, target=my_target, aux=my_aux)   # or loaded from the zoo
    >>> L.Trainer(max_epochs=1).fit(module, GeneratorDataModule(cfg))
"""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from photoveil.generator_training.config import GeneratorTrainConfig
from photoveil.generator_training.losses import classification_loss, face_loss, gap_term, link_term
from photoveil.imageops import input_hw, rescale
from photoveil.nets.unet import UNetGenerator
from photoveil.data.augment import augment


def load_critic(config: GeneratorTrainConfig, name: str) -> nn.Module:
    """A frozen target/aux model by name: a trained zoo classifier (or an untrained one of
    ``critic_width`` when set, for tests), or a face recognizer for ``task="face"``."""
    if config.task == "face":
        from photoveil.facemodels.registry import load

        return load(name)
    if config.critic_width is not None:
        from photoveil.zoo.registry import create

        return create(name, num_classes=10, in_channels=config.in_channels, width=config.critic_width)
    from photoveil.zoo.checkpoints import load_trained

    return load_trained(name, dataset=config.dataset)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def critic_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` resized (bilinear) to a face net's ``spec.input_size``; unchanged for other critics
    or when it already has that size."""
    size = getattr(getattr(model, "spec", None), "input_size", None)  # face nets: FaceNet.spec, (H, W)
    if size is None:
        return x
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)
    return x


def aux_input(config: GeneratorTrainConfig, aux: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the aux recognizer reads of faces ``x`` (aligned for ``config.target``, or on
    the ArcFace template): with ``face_template="target"`` re-aligned onto the aux's own
    template (differentiably), as an unauthorized service re-aligns an upload; otherwise
    resized (:func:`critic_input`)."""
    if config.face_template != "target":
        return critic_input(aux, x)
    from photoveil.facemodels.align import realign

    size = input_hw(aux)[0] if hasattr(aux, "spec") else x.shape[-1]
    return realign(x, config.target, config.aux, size)


def random_rescale(x: torch.Tensor, min_scale: float) -> torch.Tensor:
    """``x`` down-scaled by one random factor in ``[min_scale, 1)`` and back up: the evaluation's
    ``rescale`` robustness transform, at a random factor."""
    return rescale(x, min_scale + (1.0 - min_scale) * torch.rand(()).item())


def cosine_with_warmup(step: int, total: int, warmup_fraction: float = 0.05) -> float:
    """LR multiplier at ``step`` of ``total``: linear warm-up over the first 5 %, then cosine to 0."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_generator_path(name_or_path: str):
    """A shipped generator name (``photoveil/assets/generators/<name>.pt``) or a checkpoint path."""
    from pathlib import Path

    from photoveil.client.protect.generator import shipped_generators

    return shipped_generators().get(name_or_path, Path(name_or_path))


def load_initial_weights(net: UNetGenerator, name_or_path: str) -> None:
    """Copy the weights of a generator checkpoint (``init_from``) into ``net``; its U-Net config must match."""
    from photoveil.errors import InvalidInput
    from photoveil.nets.unet import load_generator

    src, _ = load_generator(resolve_generator_path(name_or_path))
    if src.config() != net.config():
        raise InvalidInput(f"init_from {name_or_path!r} is a U-Net {src.config()}, the run builds {net.config()}")
    net.load_state_dict(src.state_dict())


class GeneratorModule(L.LightningModule):
    """Trains ``self.generator`` (a ``UNetGenerator``); target/aux are frozen critics.

    Args:
        config: the run's ``GeneratorTrainConfig`` (or its dict, as stored in checkpoints).
        target, aux: critic models; loaded by name from ``config`` when not given
            (``aux`` only if ``config.aux`` is set).
    """

    def __init__(self, config: GeneratorTrainConfig | dict, target: nn.Module | None = None,
                 aux: nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = GeneratorTrainConfig.from_dict(config)
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.generator = UNetGenerator(in_channels=config.in_channels, width=config.width, depth=config.depth)
        if config.init_from:
            load_initial_weights(self.generator, config.init_from)
        target = target if target is not None else load_critic(config, config.target)
        if aux is None and config.aux is not None:
            aux = load_critic(config, config.aux)
        # A plain dict, not nn.ModuleDict: keeps the critics out of state_dict/.train()/DDP.
        self._critics = {"target": freeze(target), "aux": freeze(aux) if aux is not None else None}
        self.target_mean: torch.Tensor | None = None  # face task: running mean of unit clean T(x)
        # face task, config.rank_bank > 0: unit clean T(x) of earlier training batches and their labels
        self.rank_bank: tuple[torch.Tensor, torch.Tensor] | None = None

    def critic(self, role: str) -> nn.Module | None:
        model = self._critics[role]
        if model is not None and next(iter(model.parameters()), torch.empty(0)).device != self.device:
            model.to(self.device)
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    # -- loss --------------------------------------------------------------------------------
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     diversify: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(loss parts, protected images) for a batch; see :mod:`.losses` for the terms.
        ``diversify`` (training) applies ``config.aux_rescale`` to what the aux sees."""
        cfg = self.config
        x_prot = self.generator(x)
        x_aux = random_rescale(x_prot, 1.0 - cfg.aux_rescale) if diversify and cfg.aux_rescale > 0 else x_prot
        target, aux = self.critic("target"), self.critic("aux")
        weights = dict(w_target=cfg.w_target, w_aux=cfg.w_aux, w_ssim=cfg.w_ssim, ssim_mode=cfg.ssim_mode)
        if cfg.task == "face":
            with torch.no_grad():
                t_clean = target(critic_input(target, x))
                a_clean = aux(aux_input(cfg, aux, x)) if aux is not None else None
            t_prot = target(critic_input(target, x_prot))
            a_prot = aux(aux_input(cfg, aux, x_aux)) if aux is not None else None
            parts = face_loss(x, x_prot, t_clean, t_prot, a_clean, a_prot, aux_margin=cfg.face_aux_margin,
                              target_mean=self._update_target_mean(t_clean),
                              w_target_centred=cfg.w_target_centred, labels=y,
                              w_target_rank=cfg.w_target_rank,
                              rank_bank=self.rank_bank if self.training else None, **weights)
            self._update_rank_bank(t_clean, y)
            self._add_readability(parts, x, x_prot, a_clean, y)
            if a_prot is not None and y is not None:  # logged on face batches with labels, trained with w_link
                parts["link"], parts["link_top1"] = link_term(a_prot, y)
                if cfg.w_link > 0:
                    parts["loss"] = parts["loss"] + cfg.w_link * parts["link"]
        else:
            t_logits = target(x_prot)
            a_logits = aux(x_aux) if aux is not None else None
            parts = classification_loss(x, x_prot, y, t_logits, a_logits, aux_ce_cap=cfg.aux_ce_cap, **weights)
            parts["target_acc"] = (t_logits.argmax(1) == y).float().mean()
            if a_logits is not None:
                parts["aux_acc"] = (a_logits.argmax(1) == y).float().mean()
        return parts, x_prot

    @torch.no_grad()
    def _update_target_mean(self, t_clean: torch.Tensor) -> torch.Tensor:
        """The mean face for the centred target term: an exponential moving average (decay 0.99,
        ~100 batches) of the batch means of unit clean embeddings, updated in training only (not
        checkpointed: a resumed run rebuilds it); the batch's own mean until the first training step."""
        batch_mean = F.normalize(t_clean.float(), dim=1).mean(0)
        if self.training:
            self.target_mean = batch_mean if self.target_mean is None else \
                0.99 * self.target_mean.to(batch_mean.device) + 0.01 * batch_mean
        return batch_mean if self.target_mean is None else self.target_mean.to(batch_mean.device)

    @torch.no_grad()
    def _update_rank_bank(self, t_clean: torch.Tensor, labels: torch.Tensor) -> None:
        """Push the batch's unit clean target embeddings (and labels) into the ranking term's
        FIFO of ``config.rank_bank`` negatives, in training only; like the mean face it is not
        checkpointed (a resumed run refills it within rank_bank / batch_size steps)."""
        size = self.config.rank_bank
        if size == 0 or not self.training:
            return
        emb, lab = F.normalize(t_clean.float(), dim=1), labels  # no_grad: nothing to detach
        if self.rank_bank is not None:
            emb = torch.cat([self.rank_bank[0].to(emb), emb])
            lab = torch.cat([self.rank_bank[1].to(lab), lab])
        self.rank_bank = (emb[-size:], lab[-size:])

    def _add_readability(self, parts: dict, x: torch.Tensor, x_prot: torch.Tensor, a_clean,
                         labels: torch.Tensor | None) -> None:
        """The readability-witness terms (``w_readable``, ``w_readable_far``, ``w_readable_blur``,
        ``w_readable_aux``, ``w_readable_aux_blur``, ``w_readable_aux_gap``); the witness is
        logged on every face batch, also when its weights are 0."""
        from photoveil.readability import BLURRED, DEFAULT, FAR, readability_term, recognizer_view

        cfg = self.config
        if cfg.w_readable == 0 and cfg.w_readable_aux == 0 and min(x.shape[-2:]) < 22:
            return  # too small for the witness' SSIM window at half size; nothing to optimise
        r = readability_term(x, x_prot)
        parts["readable_ssim"], parts["readable_edge"] = r["readable_ssim"], r["readable_edge"]
        if cfg.w_readable > 0:
            parts["loss"] = parts["loss"] + cfg.w_readable * r["term"]
        if min(x.shape[-2:]) >= 44:
            far = readability_term(x, x_prot, FAR)
            parts["readable_ssim_far"] = far["readable_ssim"]
            if cfg.w_readable_far > 0:
                parts["loss"] = parts["loss"] + cfg.w_readable_far * far["term"]
        blurred = readability_term(x, x_prot, BLURRED)
        parts["readable_ssim_blur"] = blurred["readable_ssim"]
        if cfg.w_readable_blur > 0:
            parts["loss"] = parts["loss"] + cfg.w_readable_blur * blurred["term"]
        for weight, view, key in ((cfg.w_readable_aux, DEFAULT, "readable_aux"),
                                  (cfg.w_readable_aux_blur, BLURRED, "readable_blur_aux")):
            if weight == 0 and (cfg.w_readable_aux_gap == 0 or labels is None):
                continue
            aux = self.critic("aux")
            a_read = aux(aux_input(cfg, aux, recognizer_view(x_prot, view)))
            cos = F.cosine_similarity(a_read.float(), a_clean.float().detach(), dim=1)
            parts["loss"] = parts["loss"] + weight * F.relu(cos - cfg.face_aux_margin).mean()
            parts[f"{key}_cos"] = cos.mean().detach()
            if cfg.w_readable_aux_gap > 0 and labels is not None:  # labels: who the batch's other people are
                gap, top1 = gap_term(a_read, a_clean, labels)
                parts["loss"] = parts["loss"] + cfg.w_readable_aux_gap * gap
                parts[f"{key}_gap"], parts[f"{key}_top1"] = gap.detach(), top1

    # -- Lightning hooks ---------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.config.augment:
            x = augment(x, self.config.crop_pad, hflip=True)
        parts, _ = self.compute_loss(x, y, diversify=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, prog_bar=False, on_step=True, on_epoch=True)
        self.log("loss", parts["loss"].detach(), prog_bar=True, logger=False)
        return parts["loss"]

    def _eval_step(self, batch, stage: str):
        x, y = batch
        parts, _ = self.compute_loss(x, y)
        self.log_dict({f"{stage}/{k}": v for k, v in parts.items()}, on_epoch=True, sync_dist=True,
                      batch_size=len(x))
        return parts["loss"]

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.generator.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        if self.config.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine_with_warmup(step, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain dict next to the weights (also in hyper_parameters): readable with weights_only.
        checkpoint["generator_config"] = self.config.to_dict()
        checkpoint["unet_config"] = self.generator.config()


@torch.no_grad()
def evaluate_classification(generator: nn.Module, target: nn.Module, aux: nn.Module | None, loader,
                            device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """Paper's test figures on ``loader``: protected/clean target accuracy, protected/clean aux
    accuracy (when ``aux``) and mean |SSIM(x, x')| (fractions in [0, 1])."""
    from tqdm.auto import tqdm

    from photoveil.generator_training.losses import ssim_per_image

    generator, target = generator.eval().to(device), target.eval().to(device)
    aux = aux.eval().to(device) if aux is not None else None
    sums = {"target_accuracy": 0.0, "clean_target_accuracy": 0.0, "ssim": 0.0, "aux_accuracy": 0.0,
            "clean_aux_accuracy": 0.0}
    n = 0
    for x, y in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        x, y = x.to(device), y.to(device)
        xp = generator(x)
        sums["target_accuracy"] += (target(xp).argmax(1) == y).sum().item()
        sums["clean_target_accuracy"] += (target(x).argmax(1) == y).sum().item()
        sums["ssim"] += ssim_per_image(x, xp).abs().sum().item()
        if aux is not None:
            sums["aux_accuracy"] += (aux(xp).argmax(1) == y).sum().item()
            sums["clean_aux_accuracy"] += (aux(x).argmax(1) == y).sum().item()
        n += len(x)
    if n == 0:
        raise ValueError("evaluation loader is empty")
    out = {k: v / n for k, v in sums.items()}
    if aux is None:
        out["aux_accuracy"] = out["clean_aux_accuracy"] = None
    out["n_images"] = n
    return out
