"""Training the zoo classifiers under PyTorch Lightning.

:class:`ZooTrainConfig` is saved inside every checkpoint; :class:`ZooClassifier` is the
LightningModule (cross-entropy, SGD+Nesterov or AdamW, OneCycle or cosine schedule,
batched random-crop + horizontal-flip augmentation); :func:`train` runs one config and
writes ``<out>/<dataset>/<arch>.pt``. The same code runs on CPU, one GPU or DDP through
Lightning's ``accelerator`` / ``devices`` / ``strategy``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from photoveil.data import classification as cdata
from photoveil.zoo import registry
from photoveil.zoo.datamodule import ClassificationDataModule

log = logging.getLogger(__name__)


@dataclass
class ZooTrainConfig:
    """Hyper-parameters of one zoo training run (stored as ``checkpoint["config"]``)."""

    arch: str                       # a name in registry.ARCHS
    dataset: str = "fashion-mnist"  # a name in data.classification.NAMES
    width: float = 0.25             # channel multiplier, registry.WIDTH_RANGE
    epochs: int = 3                 # passes over the training images
    batch_size: int = 128
    optimizer: str = "sgd"          # "sgd" (momentum 0.9, Nesterov) or "adamw"
    lr: float = 0.1                 # peak learning rate (OneCycle max / cosine start)
    weight_decay: float = 5e-4
    schedule: str = "onecycle"      # "onecycle" (warm-up then anneal) or "cosine"
    label_smoothing: float = 0.0
    crop_padding: int = 2           # random-crop shift in pixels (Fashion-MNIST has a 2-px border)
    hflip: bool = True              # random horizontal flip (label-preserving for clothes and CIFAR)
    val_size: int = 5000            # held out from the official training set, seeded
    subset: int | None = None       # limit the training images (quick runs); None = all
    seed: int = 0
    channels_last: bool = True      # faster depthwise/dense convs on CPU (oneDNN)
    # Filled from the dataset by __post_init__ (kept so a checkpoint rebuilds its model alone):
    num_classes: int = 0
    in_channels: int = 0
    size: int = 32
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    data_root: str | None = None    # where the data came from (None = defaults)
    init_from: str | None = None    # continue from this zoo checkpoint's weights (same arch/width)
    prior_epochs: int = 0           # epochs already in init_from's weights (set from it)

    def __post_init__(self):
        if self.arch not in registry.ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of: {', '.join(registry.ARCHS)}")
        if self.dataset not in cdata.NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(cdata.NAMES)}")
        lo, hi = registry.WIDTH_RANGE
        checks = [
            (lo <= self.width <= hi, f"width must be in [{lo}, {hi}]"),
            (1 <= self.epochs <= 1000, "epochs must be in [1, 1000]"),
            (1 <= self.batch_size <= 65536, "batch_size must be in [1, 65536]"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (0 < self.lr <= 10, "lr must be in (0, 10]"),
            (0 <= self.weight_decay < 1, "weight_decay must be in [0, 1)"),
            (self.schedule in ("onecycle", "cosine"), "schedule must be 'onecycle' or 'cosine'"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.crop_padding <= 16, "crop_padding must be in [0, 16]"),
            (self.val_size >= 0, "val_size must be >= 0"),
            (self.subset is None or self.subset >= 1, "subset must be >= 1 or None"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"{msg}, got config {self.arch}: {self}")
        if not self.num_classes:
            self.num_classes, self.in_channels, self.size = cdata.dataset_info(self.dataset, self.data_root)
        if not self.mean:
            mean, std = cdata.normalization(self.dataset)
            self.mean, self.std = list(mean), list(std)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.prior_epochs

    def build_model(self) -> torch.nn.Module:
        return registry.create(self.arch, self.num_classes, self.in_channels, self.width, self.mean, self.std)


def augment(x: torch.Tensor, padding: int, hflip: bool) -> torch.Tensor:
    """Batched random crop (zero padding ``padding``, per-image shift) and horizontal flip."""
    n, _, h, w = x.shape
    if padding:
        xp = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
        rows = (torch.arange(h, device=x.device) + dy)[:, None, :, None]  # (n, 1, h, 1)
        cols = (torch.arange(w, device=x.device) + dx)[:, None, None, :]  # (n, 1, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[batch, chan, rows, cols]
    if hflip:
        flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
        x = torch.where(flip, x.flip(3), x)
    return x


class ThroughputLog(L.Callback):
    """Logs step, loss and images/s every ``every`` batches (for runs without a progress bar)."""

    def __init__(self, every: int = 50):
        self.every, self.t0, self.seen = every, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.t0 is None:
            self.t0 = time.time()
            return
        self.seen += len(batch[1])
        if trainer.global_step % self.every == 0 and trainer.is_global_zero:
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            log.info("epoch %d step %d/%d loss %.3f %.0f img/s", trainer.current_epoch, trainer.global_step,
                     trainer.estimated_stepping_batches, loss, self.seen / (time.time() - self.t0))


class ZooClassifier(L.LightningModule):
    """LightningModule around ``config.build_model()``; logs ``train_loss``, ``val_acc``, ``test_acc``."""

    def __init__(self, config: ZooTrainConfig):
        super().__init__()
        self.config = config
        self.model = config.build_model()
        narrow = min(m.out_channels for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        # oneDNN (torch 2.14 CPU) segfaults in the channels-last backward of 4-channel convs
        self.channels_last = config.channels_last and narrow >= 8
        if config.channels_last and not self.channels_last:
            log.warning("channels_last disabled: a conv has only %d channels (oneDNN crash)", narrow)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.model(x)

    def _prep(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def training_step(self, batch, _):
        x, y = batch
        x = self._prep(augment(x, self.config.crop_padding, self.config.hflip))
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.config.label_smoothing)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, name):
        x, y = batch
        acc = (self.model(self._prep(x)).argmax(1) == y).float().mean()
        self.log(name, acc, prog_bar=True, sync_dist=True, batch_size=len(y))

    def validation_step(self, batch, _):
        self._eval_step(batch, "val_acc")

    def test_step(self, batch, _):
        self._eval_step(batch, "test_acc")

    def configure_optimizers(self):
        c = self.config
        decay = [p for p in self.model.parameters() if p.ndim > 1]  # no weight decay on BN/bias
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=c.lr, momentum=0.9, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=c.lr)
        steps = int(self.trainer.estimated_stepping_batches)
        if c.schedule == "onecycle" and steps >= 8:  # OneCycle's phases need a few steps each
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=steps, pct_start=0.25)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train(config: ZooTrainConfig, out_dir: str | Path, accelerator: str = "auto", devices="auto",
          strategy: str = "auto", progress: bool = True, eval_batch_size: int = 500,
          test_limit: int | None = None) -> Path:
    """Train ``config``, measure full-test-set accuracy, save ``<out_dir>/<dataset>/<arch>.pt``.

    ``test_limit`` evaluates on the first N test images only (quick tests). Returns the
    checkpoint path (written by the global-zero process only under DDP).
    """
    from photoveil.zoo.checkpoints import evaluate, save_checkpoint

    L.seed_everything(config.seed, workers=True, verbose=False)
    dm = ClassificationDataModule(config.dataset, config.data_root, config.batch_size, config.val_size,
                                  config.subset, config.seed, eval_batch_size=eval_batch_size)
    if config.init_from:
        from photoveil.zoo.checkpoints import read_checkpoint

        init = read_checkpoint(config.init_from)
        for key in ("arch", "dataset", "width", "in_channels", "num_classes"):
            if init["config"][key] != getattr(config, key):
                raise ValueError(f"--init-from {config.init_from} has {key}={init['config'][key]!r}, "
                                 f"this run {key}={getattr(config, key)!r}")
        config.prior_epochs = int(init["config"]["epochs"]) + int(init["config"].get("prior_epochs", 0))
    module = ZooClassifier(config)
    if config.init_from:
        module.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                      for k, v in init["state_dict"].items()})
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=accelerator, devices=devices, strategy=strategy,
        logger=False, enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1.0 if config.val_size else 0,
        callbacks=[] if progress else [ThroughputLog()],
    )
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    train_seconds = time.time() - t0
    val_acc = float(trainer.callback_metrics.get("val_acc", math.nan))
    path = Path(out_dir) / config.dataset / f"{config.arch}.pt"
    if trainer.is_global_zero:
        model = module.model.to("cpu", memory_format=torch.contiguous_format).eval()
        test_set = cdata.load_classification(config.dataset, "test", config.data_root)
        if test_limit:
            test_set = torch.utils.data.Subset(test_set, range(min(test_limit, len(test_set))))
        test_acc = evaluate(model, test_set, batch_size=eval_batch_size, progress=progress)
        n_train = len(dm.train_set)
        metrics = {
            "test_accuracy": test_acc, "val_accuracy": val_acc, "train_seconds": round(train_seconds, 1),
            "train_images_per_second": round(n_train * config.epochs / train_seconds, 1),
            "params": sum(p.numel() for p in model.parameters()), "train_images": n_train,
            "test_images": len(test_set),
        }
        save_checkpoint(path, config, model, metrics)
        log.info("%s: test accuracy %.4f, %.0f s, saved %s", config.arch, test_acc, train_seconds, path)
    return path
