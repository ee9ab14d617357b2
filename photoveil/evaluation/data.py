"""The deterministic (seeded) subset of identities and images one evaluation run measures."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from photoveil.errors import InvalidInput

if TYPE_CHECKING:
    from photoveil.evaluation.config import EvalConfig


@dataclass
class EvalData:
    """The deterministic subset a run measures."""

    test: dict[str, list[Path]]           # identity -> selected images
    train_images: list[Path]              # images of other identities (Level-1 attacker data)
    pairs: list                           # VerificationPair over test images
    gallery: list[Path]                   # one enrolled image per test identity
    gallery_labels: list[int]
    queries: list[Path]                   # the other test images
    query_labels: list[int]
    calib_pairs: list = field(default_factory=list)   # pairs of train identities (threshold calibration)

    @property
    def protected_paths(self) -> list[Path]:
        """Images that get protected: each pair's x1 and each identification query."""
        return sorted({p.path_a for p in self.pairs} | set(self.queries))

    def person_of(self, path) -> str:
        """The test identity a selected image belongs to."""
        return next(n for n, imgs in self.test.items() if Path(path) in imgs)

    @property
    def all_paths(self) -> list[Path]:
        return sorted({p for imgs in self.test.values() for p in imgs} | {p.path_b for p in self.pairs})

    def summary(self) -> dict[str, int]:
        """The subset's sizes (``config.json`` ``data``)."""
        return {"identities": len(self.test), "test_images": len(self.all_paths),
                "pairs": len(self.pairs), "same_pairs": sum(p.same for p in self.pairs),
                "queries": len(self.queries), "protected_images": len(self.protected_paths),
                "train_images": len(self.train_images), "calibration_pairs": len(self.calib_pairs)}


def select_data(cfg: EvalConfig, folder=None) -> EvalData:
    """Seeded test identities (>= 2 images each), pairs among them, gallery / queries, and
    Level-1 training images from the remaining identities; from ``folder`` (an
    :class:`~photoveil.data.faces.IdentityFolder`, e.g. the photos of a ``--data`` tree
    where a face was found) or else the identity folder at ``cfg.data`` / the shared LFW."""
    from photoveil.data.faces import generate_pairs, scan_identity_folder
    from photoveil.paths import default_lfw_dir

    if folder is None:
        folder = scan_identity_folder(cfg.data or default_lfw_dir())
    rng = random.Random(cfg.seed)
    pool = folder.identities
    if cfg.identity_split == "heldout":
        from photoveil.data.faces import split_identities

        pool = split_identities(folder, test_fraction=0.2, seed=0)[1].identities
    eligible = [n for n in pool if len(folder.images[n]) >= 2]
    if len(eligible) < 2:
        raise InvalidInput(f"need >= 2 identities with >= 2 images under {str(folder.root)!r}, found {len(eligible)}")
    names = sorted(rng.sample(eligible, min(cfg.identities, len(eligible))))
    test = {}
    for n in names:
        imgs = list(folder.images[n])
        test[n] = sorted(rng.sample(imgs, min(cfg.images_per_identity, len(imgs))))
    sub = folder.subset(names)
    sub = type(sub)(sub.root, {n: tuple(test[n]) for n in names})
    n_same_avail = sum(len(v) * (len(v) - 1) // 2 for v in test.values())
    n_same = min(cfg.pairs // 2, n_same_avail)
    total = sum(len(v) for v in test.values())
    n_diff_avail = (total * total - sum(len(v) ** 2 for v in test.values())) // 2
    n_diff = min(cfg.pairs - n_same, n_diff_avail)
    pairs = generate_pairs(sub, n_same, n_diff, seed=cfg.seed)
    gallery, gallery_labels, queries, query_labels = [], [], [], []
    for label, n in enumerate(names):
        gallery.append(test[n][0])
        gallery_labels.append(label)
        queries += test[n][1:]
        query_labels += [label] * (len(test[n]) - 1)
    others = [p for n in folder.identities if n not in test for p in folder.images[n]]
    train = sorted(rng.sample(others, min(cfg.recon_train_images, len(others))))
    calib = []
    rest = folder.subset([n for n in folder.identities if n not in test])
    if cfg.calib_pairs and len(rest.identities) >= 2:
        # a bounded pool (<= 8 images per identity) keeps pair generation cheap on all of LFW
        pool = type(rest)(rest.root, {n: v[:8] for n, v in rest.images.items()})
        n_same_avail = sum(len(v) * (len(v) - 1) // 2 for v in pool.images.values())
        n_same = min(cfg.calib_pairs // 2, n_same_avail)
        tot = len(pool)
        n_diff = min(cfg.calib_pairs - n_same, (tot * tot - sum(len(v) ** 2 for v in pool.images.values())) // 2)
        calib = generate_pairs(pool, n_same, n_diff, seed=cfg.seed + 1)
    return EvalData(test, train, pairs, gallery, gallery_labels, queries, query_labels, calib)


__all__ = ["EvalData", "select_data"]
