"""Training the zoo classifiers under PyTorch Lightning.

:class:`~photoveil.zoo.config.ZooTrainConfig` (saved inside every checkpoint) describes a
run; :class:`ZooClassifier` is the LightningModule (cross-entropy, SGD+Nesterov or AdamW,
OneCycle or cosine schedule, :func:`photoveil.data.augment.augment` random-crop +
horizontal-flip augmentation); :func:`train` runs one config and
writes ``<out>/<dataset>/<arch>.pt``. The same code runs on CPU, one GPU or DDP through
Lightning's ``accelerator`` / ``devices`` / ``strategy``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from photoveil.data import classification as cdata
from photoveil.data.augment import augment
from photoveil.zoo.checkpoints import evaluate, read_checkpoint, save_checkpoint
from photoveil.zoo.config import ZooTrainConfig
from photoveil.zoo.datamodule import ClassificationDataModule

__all__ = ["ZooTrainConfig", "ZooClassifier", "ThroughputLog", "augment", "train"]

log = logging.getLogger(__name__)


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
    L.seed_everything(config.seed, workers=True, verbose=False)
    dm = ClassificationDataModule(config.dataset, config.data_root, config.batch_size, config.val_size,
                                  config.subset, config.seed, eval_batch_size=eval_batch_size)
    if config.init_from:
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
