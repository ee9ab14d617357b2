"""Classification datasets for the classifier zoo: Fashion-MNIST, CIFAR-10, ImageFolder.

Every dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, 32, 32)`` in
``[0, 1]`` and ``label`` an ``int``. No normalisation is applied: the zoo models normalise
internally, because the protectors (PMT, FMD, the generator) work in ``[0, 1]`` pixel space.

* ``fashion-mnist`` (1 channel): read from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``) or from ``root`` when it holds the
  same files (also torchvision's ``root/FashionMNIST/raw`` layout); else torchvision
  downloads them into ``root`` (default ``<cache>/datasets``). The 28x28 images are
  **zero-padded by 2 pixels** to 32x32 (no resampling, so pixel values stay exact).
* ``cifar10`` (3 channels, 32x32): torchvision's CIFAR-10 under ``root`` (required; not
  downloaded implicitly because it is 170 MB).
* ``imagefolder`` (3 channels): ``root/<split>/<class>/<image>``, RGB, **resized** to 32x32
  (bilinear, antialiased).

``split`` is ``"train"`` or ``"test"``; a validation set is carved deterministically from
``train`` by :func:`split_train_val` (the Lightning DataModule is
:class:`photoveil.zoo.datamodule.ClassificationDataModule`, kept apart so this module
imports without Lightning).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from photoveil.errors import DownloadError, InvalidInput, NotFound
from photoveil.labels import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

NAMES = ("fashion-mnist", "cifar10", "imagefolder")
SPLITS = ("train", "test")
SIZE = 32
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Per-channel pixel mean/std of each training set at 32x32 (Fashion-MNIST after the zero
# padding); the models bake these into their input normalisation.
STATS = {
    "fashion-mnist": ((0.2190,), (0.3318,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics
}


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise InvalidInput(f"unknown dataset {name!r}; choose one of: {', '.join(NAMES)}")
    return name


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)} "
                           "(validation is carved from 'train' by split_train_val)")
    return split


def dataset_info(name: str, root: str | os.PathLike | None = None) -> tuple[int, int, int]:
    """``(num_classes, in_channels, size)``; ``imagefolder`` needs ``root`` to count classes."""
    _check_name(name)
    if name == "fashion-mnist":
        return 10, 1, SIZE
    if name == "cifar10":
        return 10, 3, SIZE
    return len(class_names(name, root)), 3, SIZE


def class_names(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Class names in label order (``imagefolder``: the sorted folder names of ``root/train``)."""
    _check_name(name)
    if name == "fashion-mnist":
        return FASHION_MNIST_CLASSES
    if name == "cifar10":
        return CIFAR10_CLASSES
    train = _imagefolder_split_dir(root, "train")
    return tuple(sorted(p.name for p in train.iterdir() if p.is_dir()))


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel for the model's internal input normalisation."""
    return STATS[_check_name(name)]


# ----------------------------------------------------------------- Fashion-MNIST

class UInt8ImageDataset(Dataset):
    """In-memory ``(N, C, H, W)`` uint8 images + int64 labels, served as floats in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 (N, C, H, W) with one label each")
        self.images, self.targets, self.classes = images, labels.long(), classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float().div_(255.0), int(self.targets[i])


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip or plain): magic (0, 0, dtype 0x08, ndim), big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise InvalidInput(f"{path} is not a uint8 IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise InvalidInput(f"{path}: truncated IDX file ({arr.size} values, header says {tuple(dims)})")
    return arr.reshape(tuple(dims))


def _find_fashion_files(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for d in dirs:
        for sub in (d, d / "FashionMNIST" / "raw"):
            for ext in (".gz", ""):
                img, lab = sub / f"{prefix}-images-idx3-ubyte{ext}", sub / f"{prefix}-labels-idx1-ubyte{ext}"
                if img.is_file() and lab.is_file():
                    return img, lab
    return None


def _fashion_mnist(split: str, root: str | os.PathLike | None) -> UInt8ImageDataset:
    from photoveil.paths import cache_dir

    download_root = Path(root).expanduser() if root else cache_dir() / "datasets"
    dirs = [download_root] if root else [DEBIAN_FASHION_MNIST, download_root]
    found = _find_fashion_files(split, dirs)
    if found is None:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(download_root), train=split == "train", download=True)
        except Exception as exc:  # URLError, HTTPError, socket timeouts, checksum failures
            raise DownloadError(
                f"Fashion-MNIST is not under {', '.join(map(str, dirs))} and the download failed ({exc}); "
                "install the Debian package 'dataset-fashion-mnist' or pass --data-root with the idx files") from exc
        found = _find_fashion_files(split, [download_root])
        if found is None:
            raise NotFound(f"torchvision reported success but no Fashion-MNIST idx files are under {download_root}")
    images = torch.from_numpy(_read_idx(found[0]).copy())
    labels = torch.from_numpy(_read_idx(found[1]).astype(np.int64))
    pad = (SIZE - images.shape[-1]) // 2  # 28 -> 32: 2 zero pixels each side, no resampling
    images = torch.nn.functional.pad(images.unsqueeze(1), (pad, pad, pad, pad))
    return UInt8ImageDataset(images, labels, FASHION_MNIST_CLASSES)


# ------------------------------------------------------------ CIFAR-10, folders

def _cifar10(split: str, root) -> Dataset:
    if root is None:
        raise InvalidInput("cifar10 needs root= (a folder holding torchvision's 'cifar-10-batches-py')")
    from torchvision import datasets, transforms

    try:
        return datasets.CIFAR10(str(root), train=split == "train", download=False, transform=transforms.ToTensor())
    except RuntimeError as exc:
        raise NotFound(f"CIFAR-10 not found under {root} ({exc}); download it with "
                       "torchvision.datasets.CIFAR10(root, download=True)") from exc


def _imagefolder_split_dir(root, split: str) -> Path:
    if root is None:
        raise InvalidInput("imagefolder needs root= laid out as root/<train|test>/<class>/<image>")
    d = Path(root).expanduser() / split
    if not d.is_dir():
        raise NotFound(f"{d} does not exist; imagefolder expects root/<train|test>/<class>/<image>")
    return d


def _imagefolder(split: str, root) -> Dataset:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize((SIZE, SIZE), antialias=True),
        transforms.ToTensor(),
    ])
    ds = datasets.ImageFolder(str(_imagefolder_split_dir(root, split)), transform=tf)
    expected = class_names("imagefolder", root)
    if tuple(ds.classes) != expected:
        raise InvalidInput(f"{root}/{split} has classes {ds.classes}, but train has {list(expected)}")
    return ds


def load_classification(name: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """The ``split`` ("train" | "test") of dataset ``name`` ("fashion-mnist" | "cifar10" | "imagefolder").

    Items are ``(float tensor (C, 32, 32) in [0, 1], int label)``; see the module docstring
    for where each dataset is looked for.
    """
    _check_name(name), _check_split(split)
    if name == "fashion-mnist":
        return _fashion_mnist(split, root)
    if name == "cifar10":
        return _cifar10(split, root)
    return _imagefolder(split, root)


# ------------------------------------------------------------- splits, loaders

def split_train_val(n: int, val_size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic disjoint ``(train_indices, val_indices)`` of ``range(n)`` (seeded permutation)."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n - 1}] for a training set of {n}, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[val_size:]), sorted(perm[:val_size])


def fixed_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A deterministic random ``n``-item subset (the whole dataset when ``n`` is None or >= len)."""
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, sorted(idx.tolist()))
