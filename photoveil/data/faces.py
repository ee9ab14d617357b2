"""Identity-folder face datasets (LFW layout) and verification pairs.

An identity folder holds one sub-folder per person with that person's images,
``Name/Name_0001.jpg`` as in Labeled Faces in the Wild (Huang et al., UMass TR 07-49,
2007). LFW releases put these folders either directly under the root or under
``root/images`` (the shared copy here); both are accepted.

* :func:`scan_identity_folder` lists identities and their images,
* :func:`split_identities` makes a seeded train/test split with disjoint identities,
* :func:`parse_pairs` reads LFW ``pairs.txt`` lines (``Name n1 n2`` same person,
  ``Name1 n1 Name2 n2`` different persons, 1-based image numbers),
* :func:`generate_pairs` draws verification pairs from any identity folder,
* :class:`FaceDataset` yields aligned face tensors ``[3, size, size]`` in ``[0, 1]``
  with integer identity labels.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from photoveil.errors import InvalidInput, NotFound

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class IdentityFolder:
    """Identities (sorted names) and their image paths (sorted) under ``root``."""

    root: Path
    images: dict[str, tuple[Path, ...]] = field(repr=False)

    @property
    def identities(self) -> list[str]:
        return sorted(self.images)

    def __len__(self) -> int:
        return sum(len(v) for v in self.images.values())

    def samples(self) -> list[tuple[Path, int]]:
        """``(path, label)`` for every image; labels index :attr:`identities`."""
        return [(p, label) for label, name in enumerate(self.identities) for p in self.images[name]]

    def subset(self, names: Iterable[str]) -> "IdentityFolder":
        return IdentityFolder(self.root, {n: self.images[n] for n in sorted(names)})


@dataclass(frozen=True)
class VerificationPair:
    """Two face images and whether they show the same person."""

    path_a: Path
    path_b: Path
    same: bool


def images_root(root: str | os.PathLike) -> Path:
    """The folder holding the identity sub-folders: ``root/images`` if present, else ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotFound(f"face data folder {str(root)!r} does not exist; pass a folder with one "
                       "sub-folder per identity (LFW layout Name/Name_0001.jpg)")
    nested = root / "images"
    return nested if nested.is_dir() else root


def scan_identity_folder(root: str | os.PathLike, min_images: int = 1) -> IdentityFolder:
    """List identities with at least ``min_images`` images under ``root``.

    Raises :class:`NotFound` for a missing folder and :class:`InvalidInput` when no
    identity folder with enough images is found.
    """
    if min_images < 1:
        raise ValueError(f"min_images must be >= 1, got {min_images}")
    base = images_root(root)
    images: dict[str, tuple[Path, ...]] = {}
    for entry in sorted(base.iterdir()):
        if not entry.is_dir():
            continue
        files = tuple(sorted(p for p in entry.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        if len(files) >= min_images:
            images[entry.name] = files
    if not images:
        raise InvalidInput(
            f"no identity folders with >= {min_images} image(s) ({', '.join(IMAGE_EXTENSIONS)}) "
            f"under {str(base)!r}; expected the LFW layout Name/Name_0001.jpg")
    return IdentityFolder(base, images)


def split_identities(folder: IdentityFolder, test_fraction: float = 0.2, seed: int = 0,
                     min_images: int = 1) -> tuple[IdentityFolder, IdentityFolder]:
    """Seeded train/test split by identity: no person appears on both sides.

    Identities with fewer than ``min_images`` images are dropped first. The split only
    depends on the identity names and ``seed`` (not on file-system order).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min_images < 1:
        raise ValueError(f"min_images must be >= 1, got {min_images}")
    names = [n for n in folder.identities if len(folder.images[n]) >= min_images]
    if len(names) < 2:
        raise InvalidInput(f"need >= 2 identities with >= {min_images} images to split, "
                           f"found {len(names)} under {str(folder.root)!r}")
    random.Random(seed).shuffle(names)
    n_test = min(len(names) - 1, max(1, round(len(names) * test_fraction)))
    return folder.subset(names[n_test:]), folder.subset(names[:n_test])


def lfw_image_path(base: Path, name: str, number: int) -> Path:
    """``base/Name/Name_0001.jpg`` for 1-based image ``number``."""
    return base / name / f"{name}_{number:04d}.jpg"


def parse_pairs(pairs_file: str | os.PathLike, data_root: str | os.PathLike | None = None,
                check_files: bool = True) -> list[VerificationPair]:
    """Read an LFW ``pairs.txt`` (View 2 line format).

    Lines are ``Name n1 n2`` (same person) or ``Name1 n1 Name2 n2`` (different
    persons), whitespace-separated with 1-based image numbers. A leading header line of
    integers (``10 300`` in the official file) and blank lines are skipped. Images are
    resolved under ``data_root`` (default: the folder of ``pairs_file``); with
    ``check_files`` a missing image raises :class:`NotFound`. A malformed line raises
    :class:`InvalidInput` naming the file, the line number and the accepted formats.
    """
    pairs_file = Path(pairs_file).expanduser()
    if not pairs_file.is_file():
        raise NotFound(f"pairs file {str(pairs_file)!r} does not exist")
    base = images_root(data_root if data_root is not None else pairs_file.parent)
    pairs: list[VerificationPair] = []
    with pairs_file.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields or (lineno == 1 and all(f.isdigit() for f in fields)):
                continue
            where = f"{pairs_file}:{lineno}"
            try:
                if len(fields) == 3:
                    name_a, name_b = fields[0], fields[0]
                    num_a, num_b = int(fields[1]), int(fields[2])
                elif len(fields) == 4:
                    name_a, num_a, name_b, num_b = fields[0], int(fields[1]), fields[2], int(fields[3])
                else:
                    raise ValueError(f"{len(fields)} fields")
            except ValueError as exc:
                raise InvalidInput(
                    f"{where}: malformed pair line {line.strip()!r} ({exc}); accepted: "
                    "'Name n1 n2' (same person) or 'Name1 n1 Name2 n2' (different persons) "
                    "with 1-based image numbers") from None
            if num_a < 1 or num_b < 1:
                raise InvalidInput(f"{where}: image numbers are 1-based, got {line.strip()!r}")
            if len(fields) == 3 and num_a == num_b:
                raise InvalidInput(f"{where}: a same-person pair needs two different images, "
                                   f"got {line.strip()!r}")
            if len(fields) == 4 and name_a == name_b:
                raise InvalidInput(f"{where}: a different-person pair names one identity twice: "
                                   f"{line.strip()!r}")
            pa, pb = lfw_image_path(base, name_a, num_a), lfw_image_path(base, name_b, num_b)
            if check_files:
                for p in (pa, pb):
                    if not p.is_file():
                        raise NotFound(f"{where}: image {str(p)!r} does not exist")
            pairs.append(VerificationPair(pa, pb, len(fields) == 3))
    if not pairs:
        raise InvalidInput(f"pairs file {str(pairs_file)!r} holds no pairs")
    return pairs


def generate_pairs(folder: IdentityFolder, n_same: int, n_different: int,
                   seed: int = 0) -> list[VerificationPair]:
    """Draw distinct verification pairs from an identity folder (seeded).

    Same-person pairs come from identities with >= 2 images. Asking for more pairs than
    the folder holds raises :class:`InvalidInput` with the available counts.
    """
    if n_same < 0 or n_different < 0:
        raise ValueError(f"pair counts must be >= 0, got {n_same}, {n_different}")
    rng = random.Random(seed)
    same_pool = [(folder.images[n][i], folder.images[n][j]) for n in folder.identities
                 for i in range(len(folder.images[n])) for j in range(i + 1, len(folder.images[n]))]
    if n_same > len(same_pool):
        raise InvalidInput(f"asked for {n_same} same-person pairs, the folder has {len(same_pool)}")
    same = rng.sample(same_pool, n_same)
    names = folder.identities
    if n_different and len(names) < 2:
        raise InvalidInput("different-person pairs need >= 2 identities")
    total = len(folder)
    max_diff = (total * total - sum(len(v) ** 2 for v in folder.images.values())) // 2
    if n_different > max_diff:
        raise InvalidInput(f"asked for {n_different} different-person pairs, the folder has {max_diff}")
    seen: set[tuple[Path, Path]] = set()
    while len(seen) < n_different:
        a, b = rng.sample(names, 2)
        pa, pb = rng.choice(folder.images[a]), rng.choice(folder.images[b])
        key = (pa, pb) if pa < pb else (pb, pa)
        seen.add(key)
    different = sorted(seen)
    rng.shuffle(different)
    pairs = [VerificationPair(a, b, True) for a, b in same] + \
            [VerificationPair(a, b, False) for a, b in different]
    rng.shuffle(pairs)
    return pairs


def subset_pairs(pairs: Sequence[VerificationPair], n: int | None,
                 seed: int = 0) -> list[VerificationPair]:
    """A fixed seeded subset of ``n`` pairs keeping the same/different proportion."""
    if n is None or n >= len(pairs):
        return list(pairs)
    if n < 2:
        raise ValueError(f"a pair subset needs n >= 2, got {n}")
    rng = random.Random(seed)
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    n_same = min(len(same), max(1, round(n * len(same) / len(pairs))))
    chosen = rng.sample(same, n_same) + rng.sample(diff, min(len(diff), n - n_same))
    order = {id(p): i for i, p in enumerate(pairs)}
    return sorted(chosen, key=lambda p: order[id(p)])


class FaceDataset:
    """Aligned faces of an identity folder as a map-style torch Dataset.

    ``dataset[i] -> (face, label)``: ``face`` is a float tensor ``[3, size, size]`` in
    ``[0, 1]`` (RGB) aligned with ``alignment`` on the template of recognizer ``model``
    (see :func:`photoveil.facemodels.align.align_faces`), ``label`` the index of the identity
    in ``folder.identities``. Landmark detections are cached on disk by the aligner.
    """

    def __init__(self, folder: IdentityFolder | str | os.PathLike, size: int,
                 alignment: str = "landmarks", min_images: int = 1,
                 cache_dir: str | os.PathLike | None = None, model: str | None = None):
        from photoveil.facemodels.align import ALIGNMENTS

        if size < 16 or size > 1024:
            raise ValueError(f"size must be in [16, 1024], got {size}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if not isinstance(folder, IdentityFolder):
            folder = scan_identity_folder(folder, min_images=min_images)
        self.folder = folder
        self.size = size
        self.alignment = alignment
        self.cache_dir = cache_dir
        self.model = model  # whose template the landmarks are aligned on (None: ArcFace's)
        self.samples = folder.samples()
        self.classes = folder.identities

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import torch

        from photoveil.facemodels.align import align_faces

        path, label = self.samples[index]
        face = align_faces([path], self.size, alignment=self.alignment, model=self.model, cache_dir=self.cache_dir)[0]
        return face, torch.tensor(label)
