"""Data for generator training (Lightning DataModule).

Classification (paper Sec. 4.1.1): train = the training split (optionally a seeded random
``subset``), validation = the first ``val_size`` images of the test split, test = the rest
of the test split, so the matrix figures come from images that neither training nor model
selection saw. Faces: LFW identities split by person (``photoveil.data.faces``); the
generator trains and validates on train identities only, test identities are held out.

Datasets yield ``(image [C, H, W] in [0, 1], label)``; augmentation happens on the batch
in the LightningModule, so any Dataset can be injected (tests use TensorDatasets).

Example::

    >>> dm = GeneratorDataModule(GeneratorTrainConfig(subset=1000))
    >>> dm.setup("fit"); x, y = next(iter(dm.train_dataloader()))
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from photoveil.generator_training.config import GeneratorTrainConfig


class GeneratorDataModule(L.LightningDataModule):
    """Train/val/test loaders for one generator run.

    Args:
        config: the run's ``GeneratorTrainConfig`` (dataset, subset, val_size, batch_size, seed).
        train, val, test: datasets to use instead of loading ``config.dataset``.
    """

    def __init__(self, config: GeneratorTrainConfig, train: Dataset | None = None,
                 val: Dataset | None = None, test: Dataset | None = None) -> None:
        super().__init__()
        self.config = config
        self.train_set, self.val_set, self.test_set = train, val, test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None or self.val_set is None or self.test_set is None:
            train, val, test = (load_face_splits if self.config.task == "face" else load_classification_splits)(self.config)
            self.train_set = self.train_set if self.train_set is not None else train
            self.val_set = self.val_set if self.val_set is not None else val
            self.test_set = self.test_set if self.test_set is not None else test
        if self.config.subset is not None and len(self.train_set) > self.config.subset:
            self.train_set = seeded_subset(self.train_set, self.config.subset, self.config.seed)
        if self.config.task == "face" and len(self.val_set) > self.config.val_size:
            # faces: validate on a seeded ``val_size`` of the validation identities' images
            self.val_set = seeded_subset(self.val_set, self.config.val_size, self.config.seed)

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(ds, batch_size=self.config.batch_size, shuffle=shuffle, generator=gen,
                          num_workers=self.config.num_workers, persistent_workers=self.config.num_workers > 0,
                          drop_last=False)

    def train_dataloader(self) -> DataLoader:
        if self.config.w_link > 0:  # the link term needs two photos of each person in a batch
            sampler = PairBatchSampler(labels_of(self.train_set), self.config.batch_size, self.config.seed)
            return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.config.num_workers,
                              persistent_workers=self.config.num_workers > 0)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class PairBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size / 2`` people x 2 photos each, for the link term.

    Each epoch visits the people with >= 2 photos in a seeded order, every person once per
    pass, and gives as many batches as plain shuffling would (``len(labels) / batch_size``,
    rounded up), so an epoch costs the same; each person's two photos are drawn anew each
    time. Photos of people with a single photo are not used.

    Args:
        labels: the identity of every item of the dataset, ``[N]``.
        batch_size: even, >= 4.
        seed: the order of epoch ``e`` comes from ``seed + e``.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0) -> None:
        if batch_size < 4 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 4, got {batch_size}")
        by_person: dict[int, list[int]] = {}
        for i, label in enumerate(int(v) for v in labels):
            by_person.setdefault(label, []).append(i)
        self.people = [items for items in by_person.values() if len(items) >= 2]
        if len(self.people) < batch_size // 2:
            raise ValueError(f"pair batches of {batch_size} need {batch_size // 2} people with >= 2 photos, "
                             f"the training set has {len(self.people)}")
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.batches = -(-len(labels) // batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        queue: deque[int] = deque()
        for _ in range(self.batches):
            chosen, later = [], []  # a batch straddling two passes must not hold one person twice
            while len(chosen) < self.batch_size // 2:
                if not queue:
                    queue.extend(torch.randperm(len(self.people), generator=gen).tolist())
                person = queue.popleft()
                (later if person in chosen else chosen).append(person)
            queue.extendleft(reversed(later))
            batch = []
            for person in chosen:
                items = self.people[person]
                batch += [items[k] for k in torch.randperm(len(items), generator=gen)[:2].tolist()]
            yield batch


def labels_of(ds: Dataset) -> list[int]:
    """The identity label of every item of ``ds`` (a face dataset, or a ``Subset`` of one),
    read from its samples list without loading images."""
    if isinstance(ds, Subset):
        inner = labels_of(ds.dataset)
        return [inner[i] for i in ds.indices]
    if hasattr(ds, "samples"):
        return [int(label) for _, label in ds.samples]
    return [int(ds[i][1]) for i in range(len(ds))]


def seeded_subset(ds: Dataset, n: int, seed: int) -> Subset:
    """``n`` distinct items of ``ds`` drawn with ``seed`` (same seed, same subset)."""
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(ds, idx.sort().values.tolist())


def load_classification_splits(config: GeneratorTrainConfig) -> tuple[Dataset, Dataset, Dataset]:
    """(train split, first ``val_size`` of the test split, the rest of the test split)."""
    from photoveil.data.classification import load_classification

    train = load_classification(config.dataset, "train")
    test_all = load_classification(config.dataset, "test")
    n_val = min(config.val_size, len(test_all) // 2)
    return train, Subset(test_all, range(n_val)), Subset(test_all, range(n_val, len(test_all)))


def load_face_splits(config: GeneratorTrainConfig) -> tuple[Dataset, Dataset, Dataset]:
    """LFW split by identity: (train ids minus a val share, val from train ids, test ids)."""
    from photoveil.data.faces import FaceDataset, scan_identity_folder, split_identities
    from photoveil.paths import default_lfw_dir

    folder = scan_identity_folder(default_lfw_dir())
    train_ids, test_ids = split_identities(folder, test_fraction=0.2, seed=0)
    fit_ids, val_ids = split_identities(train_ids, test_fraction=0.1, seed=config.seed)
    size = config.image_size
    model = config.target if config.face_template == "target" else None  # None: the ArcFace template
    return tuple(FaceDataset(ids, size, model=model) for ids in (fit_ids, val_ids, test_ids))
