"""Classification data: Fashion-MNIST (Debian files / root / download fallback), CIFAR-10, ImageFolder."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from photoveil.data import classification as cd
from photoveil.errors import DownloadError, InvalidInput, NotFound

HAVE_DEBIAN = (cd.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file()


def _write_idx(path, arr: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fashion(root, n=7, prefix="t10k"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files_are_padded_unit_range():
    test = cd.load_classification("fashion-mnist", "test")
    assert len(test) == 10000
    x, y = test[123]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    # 28 -> 32 by zero padding: a 2-pixel black frame and untouched content inside
    assert x[:, :2].abs().sum() == 0 and x[:, -2:].abs().sum() == 0 and x[..., :2].abs().sum() == 0
    assert isinstance(y, int) and 0 <= y < 10
    assert torch.equal(test.targets.bincount(), torch.full((10,), 1000))
    assert cd.dataset_info("fashion-mnist") == (10, 1, 32)
    assert len(cd.class_names("fashion-mnist")) == 10


def test_fashion_mnist_from_root_matches_written_pixels(tmp_path):
    images, labels = _fake_fashion(tmp_path)
    ds = cd.load_classification("fashion-mnist", "test", root=tmp_path)
    assert len(ds) == len(images)
    x, y = ds[3]
    assert torch.allclose(x[0, 2:30, 2:30], torch.from_numpy(images[3]).float() / 255)
    assert y == int(labels[3])


def test_fashion_mnist_offline_is_download_error(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *a, **k):
            raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(DownloadError, match="dataset-fashion-mnist"):
        cd.load_classification("fashion-mnist", "train", root=tmp_path)


def test_corrupt_idx_is_invalid_input(tmp_path):
    _fake_fashion(tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)  # truncated
    with pytest.raises(InvalidInput, match="truncated"):
        cd.load_classification("fashion-mnist", "test", root=tmp_path)


def test_bad_names_list_choices():
    with pytest.raises(InvalidInput, match="fashion-mnist, cifar10, imagefolder"):
        cd.load_classification("mnist", "train")
    with pytest.raises(InvalidInput, match="train, test"):
        cd.load_classification("fashion-mnist", "validation")
    with pytest.raises(InvalidInput, match="root"):
        cd.load_classification("cifar10", "train")
    with pytest.raises(InvalidInput, match="root"):
        cd.dataset_info("imagefolder")


def test_cifar10_missing_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="CIFAR-10"):
        cd.load_classification("cifar10", "test", root=tmp_path)


def test_imagefolder_resizes_to_32_rgb(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i, size in enumerate([(40, 50), (17, 23)]):
                arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).convert("L" if i else "RGB").save(tmp_path / split / cls / f"{i}.png")
    ds = cd.load_classification("imagefolder", "test", root=tmp_path)
    assert len(ds) == 4 and cd.dataset_info("imagefolder", tmp_path) == (2, 3, 32)
    assert cd.class_names("imagefolder", tmp_path) == ("cat", "dog")
    for x, y in (ds[0], ds[3]):
        assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert ds[3][1] == 1


def test_split_train_val_deterministic_and_disjoint():
    tr, va = cd.split_train_val(100, 20, seed=3)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    assert (tr, va) == cd.split_train_val(100, 20, seed=3)
    assert va != cd.split_train_val(100, 20, seed=4)[1]
    with pytest.raises(ValueError, match="val_size"):
        cd.split_train_val(10, 10)


def test_datamodule_subset_and_loaders(tmp_path):
    _fake_fashion(tmp_path, n=40, prefix="train")
    _fake_fashion(tmp_path, n=9, prefix="t10k")
    from photoveil.zoo.datamodule import ClassificationDataModule

    dm = ClassificationDataModule("fashion-mnist", root=tmp_path, batch_size=8, val_size=10, subset=16)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 10, 9)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 9
