"""Class names, in label order, of the fixed-class datasets the zoo classifiers train on.

Kept apart from :mod:`photoveil.data.classification` so that code which only needs the
names (the server labelling a hosted classifier's outputs) does not import the dataset
loaders. ``imagefolder`` has no fixed names: they are its folder names.
"""
from __future__ import annotations

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
}
