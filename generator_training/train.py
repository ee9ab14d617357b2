"""One generator training run: fit under Lightning, keep the best epoch, export generator.pt.

Run folder layout (``out_dir``)::

    checkpoints/last.ckpt, best.ckpt   Lightning checkpoints (resume from last.ckpt)
    logs/version_N/metrics.csv         CSVLogger, one version per session (+ TensorBoard if installed)
    generator.pt                       compact generator (photoveil.nets.save_generator) with
                                       the config, test figures and measured throughput
    result.json                        the same figures as JSON
    ranks/rank-N.json                  per process: world size, strategy, batches it trained

The paper selects the epoch with the lowest validation loss; so does ``best.ckpt``.
Running again on the same folder resumes from ``last.ckpt`` (Lightning ``ckpt_path``);
the stored config must match, except ``epochs`` (may be raised to train longer) and
``num_workers``. Multi-GPU / multi-node is ``accelerator``/``devices``/``strategy``/
``num_nodes`` (e.g. ``devices=4, strategy="ddp"``), no code change.

Example::

    >>> cfg = GeneratorTrainConfig(target="resnet18", aux="vgg13_bn", width=0.25, epochs=2, subset=5000)
    >>> result = train(cfg, "runs/resnet18__vgg13_bn")
    >>> result.metrics["target_accuracy"], result.metrics["ssim"]
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from photoveil.errors import InvalidInput
from photoveil.generator_training.config import GeneratorTrainConfig
from photoveil.generator_training.datamodule import GeneratorDataModule
from photoveil.generator_training.module import GeneratorModule, evaluate_classification
from photoveil.nets.unet import UNetGenerator, count_parameters, save_generator

RESUMABLE_CHANGES = {"epochs", "num_workers"}  # config keys that may differ on resume


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """"auto" -> bf16-mixed (or 16-mixed) when a CUDA GPU will be used, else 32-true."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class Throughput(Callback):
    """Training images/s (data loading included), measured from the end of the first batch
    of each epoch (warm-up excluded) to the end of the last."""

    def __init__(self) -> None:
        self.images, self.seconds = 0, 0.0
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.images += len(batch[0]) * trainer.world_size
            self.seconds += now - self._last
        self._last = now

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


class RankReport(Callback):
    """Each process writes ``ranks/rank-<global rank>.json`` (world size, batches it trained) when
    training ends: the record that every DDP rank took part (tests, multi-node runs)."""

    def __init__(self, out: Path) -> None:
        self.out, self.batches = out / "ranks", 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "train_batches": self.batches,
                  "strategy": type(trainer.strategy).__name__}
        (self.out / f"rank-{trainer.global_rank}.json").write_text(json.dumps(report))


@dataclass
class TrainResult:
    out_dir: Path
    generator_path: Path | None
    metrics: dict = field(default_factory=dict)


def stored_config(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["generator_config"]


def _check_resume(config: GeneratorTrainConfig, last: Path) -> None:
    stored = stored_config(last)
    differs = sorted(k for k in set(stored) | set(config.to_dict())
                     if stored.get(k) != config.to_dict().get(k) and k not in RESUMABLE_CHANGES)
    if differs:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {config.to_dict().get(k)!r}" for k in differs)
        raise InvalidInput(f"{last.parent.parent} holds a run with a different config ({detail}); "
                           "use another --out or the same settings (only epochs/num_workers may change)")


def train(config: GeneratorTrainConfig, out_dir, *, target=None, aux=None, datamodule=None,
          accelerator: str = "auto", devices="auto", strategy: str = "auto", num_nodes: int = 1,
          resume: bool = True, progress: bool = True, max_steps: int = -1,
          limit_val_batches: float | int = 1.0, evaluate: bool = True) -> TrainResult:
    """Fit a generator for ``config`` into ``out_dir`` (resuming if it holds a run) and export it.

    ``target``/``aux``/``datamodule`` default to the zoo models and datasets named by ``config``.
    Returns the run folder, the exported ``generator.pt`` and figures: test-set accuracies and
    |SSIM| (classification), best validation loss, ``train_images_per_second``.
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if last.exists():
        if not resume:
            raise InvalidInput(f"{out} already holds a run; resume it or choose another --out")
        _check_resume(config, last)
        ckpt_path = str(last)

    L.seed_everything(config.seed, workers=True, verbose=False)
    module = GeneratorModule(config, target=target, aux=aux)
    dm = datamodule if datamodule is not None else GeneratorDataModule(config)
    loggers = [CSVLogger(out, name="logs")]  # a new version per (resumed) session keeps old logs
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401  (optional)

        loggers.append(TensorBoardLogger(out, name="tb"))
    except ImportError:
        pass
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                              save_last=True, enable_version_counter=False)
    speed = Throughput()
    trainer = L.Trainer(
        max_epochs=config.epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
        strategy=strategy, num_nodes=num_nodes, precision=resolve_precision(config.precision, accelerator),
        logger=loggers, callbacks=[best_cb, speed, RankReport(out)], default_root_dir=out, enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=10, limit_val_batches=limit_val_batches,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return TrainResult(out, None)

    best = Path(best_cb.best_model_path) if best_cb.best_model_path else last
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    net = UNetGenerator(**ckpt["unet_config"])
    net.load_state_dict({k[len("generator."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("generator.")})
    net.eval()

    metrics: dict = {"best_checkpoint": best.name, "best_epoch": ckpt.get("epoch"),
                     "generator_parameters": count_parameters(net)}
    if best_cb.best_model_score is not None:
        metrics["best_val_loss"] = float(best_cb.best_model_score)
    prev = out / "result.json"
    old_speed = json.loads(prev.read_text()).get("train_images_per_second") if prev.exists() else None
    metrics["train_images_per_second"] = speed.images_per_second or old_speed
    if evaluate and config.task == "classification":
        dm.setup("test")
        metrics.update(evaluate_classification(net, module.critic("target"), module.critic("aux"),
                                               dm.test_dataloader(), device=module.device, progress=progress))
    metrics = {"target": config.target, "aux": config.aux, **metrics}
    gen_path = out / "generator.pt"
    save_generator(gen_path, net.cpu(), config=config.to_dict(), metrics=metrics)
    (out / "result.json").write_text(json.dumps({**metrics, "config": config.to_dict()}, indent=2))
    return TrainResult(out, gen_path, metrics)
