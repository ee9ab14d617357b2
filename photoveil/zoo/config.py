"""``ZooTrainConfig``: the hyper-parameters of one zoo training run.

Stored as ``checkpoint["config"]`` and enough to rebuild the checkpoint's model
(:meth:`ZooTrainConfig.build_model`), so loading a checkpoint needs neither Lightning nor
the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from photoveil.data import classification as cdata
from photoveil.zoo import registry


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
