"""Lightning DataModule over :mod:`photoveil.data.classification` (train / seeded val / test)."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Subset

from photoveil.data.classification import _check_name, fixed_subset, load_classification, split_train_val


class ClassificationDataModule(L.LightningDataModule):
    """Lightning DataModule: train / val (carved from train, seeded) / test loaders.

    ``subset`` limits the training images (after the validation split) for quick runs.
    """

    def __init__(self, name: str, root=None, batch_size: int = 128, val_size: int = 5000,
                 subset: int | None = None, seed: int = 0, num_workers: int = 0, eval_batch_size: int = 500):
        super().__init__()
        _check_name(name)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name, self.root, self.batch_size, self.val_size = name, root, batch_size, val_size
        self.subset, self.seed, self.num_workers, self.eval_batch_size = subset, seed, num_workers, eval_batch_size
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            full = load_classification(self.name, "train", self.root)
            tr, va = split_train_val(len(full), self.val_size, self.seed)
            self.train_set = fixed_subset(Subset(full, tr), self.subset, self.seed)
            self.val_set = Subset(full, va)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = load_classification(self.name, "test", self.root)

    def _loader(self, ds, batch_size, shuffle):
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=shuffle and len(ds) > batch_size)

    def train_dataloader(self):
        return self._loader(self.train_set, self.batch_size, True)

    def val_dataloader(self):
        return self._loader(self.val_set, self.eval_batch_size, False)

    def test_dataloader(self):
        return self._loader(self.test_set, self.eval_batch_size, False)
