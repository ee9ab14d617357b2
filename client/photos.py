"""Photos in and out of ``photoveil protect``: reading (EXIF orientation applied, HEIC and
WebP where Pillow or pillow-heif reads them), finding every face and its aligned crop,
writing the protected photo without the original's metadata, and the output names.

Output names (:func:`plan`): ``OUT/<path under the input folder>/<stem>.<method>.<fmt>``
mirroring the input tree (a file named directly goes to ``OUT/<stem>...``), or beside the
input with ``in_place``; per face ``<stem>.<method>.face<k>.png`` (the aligned, protected
crop: what the recognition service receives) and ``.npy`` (its upload features). Two
inputs that would share a name (``a.jpg`` and ``a.png`` in one folder) keep their
extension in the stem (``a_jpg.pmt.png``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from photoveil.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # numpy and torch load only when a photo is processed: `photoveil --help` stays fast
    import numpy as np

READ_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
HEIC_SUFFIXES = (".heic", ".heif")
# Other image files a camera roll holds: reported by name as unsupported, never skipped silently.
KNOWN_SUFFIXES = (".gif", ".bmp", ".tif", ".tiff", ".dng", ".raw", ".cr2", ".nef", ".arw", ".avif")
FORMATS = ("png", "jpg")
# A face narrower than this (photo pixels) is protected at low resolution: warned about.
MIN_FACE_PX = 64
OUTPUT_RE = re.compile(r"\.(pmt|fmd|generator)(\.face\d+)?\.(png|jpg|npy)$")


def heic_support() -> bool:
    """Whether HEIC/HEIF can be read (pillow-heif installed; registers its opener)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def readable_suffixes() -> tuple[str, ...]:
    return READ_SUFFIXES + (HEIC_SUFFIXES if heic_support() else ())


def is_output(path: Path) -> bool:
    """A file photoveil protect wrote (``*.pmt.png``, ``*.fmd.face0.png``, ...)."""
    return bool(OUTPUT_RE.search(path.name)) or path.name == "photoveil-run.json"


@dataclass
class Found:
    """What :func:`collect` found: the photos to read (with the folder each was found
    under), outputs of earlier runs (skipped), and files of formats it cannot read."""

    photos: list[tuple[Path, Path | None]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)


def collect(inputs: list[str], exclude: Path | None = None) -> Found:
    """Photos named directly or found (recursively) under folders, in a stable order.
    Files under ``exclude`` (the output folder) are left out."""
    readable = readable_suffixes()
    found = Found()
    excl = exclude.resolve() if exclude is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [(f, path) for f in sorted(path.rglob("*")) if f.is_file()]
        elif path.is_file():
            files = [(path, None)]
        else:
            raise InvalidInput(f"input {item!r} does not exist (accepted: photo files or folders)")
        for f, root in files:
            if excl is not None and (f.resolve() == excl or excl in f.resolve().parents):
                continue
            suffix = f.suffix.lower()
            if is_output(f):
                found.outputs.append(f)
            elif suffix in readable:
                found.photos.append((f, root))
            elif suffix in READ_SUFFIXES + HEIC_SUFFIXES + KNOWN_SUFFIXES or root is None:
                found.unsupported.append(f)
    return found


def unsupported_reason(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in HEIC_SUFFIXES:
        return f"{suffix} is not readable here: install pillow-heif (pip install pillow-heif) to read HEIC/HEIF"
    return (f"{suffix or 'no extension'} is not a supported photo format "
            f"(accepted: {', '.join(s.lstrip('.') for s in readable_suffixes())})")


def read_photo(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB, EXIF orientation applied (what a viewer shows)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.suffix.lower() in HEIC_SUFFIXES:
        heic_support()
    if not path.is_file():
        raise NotFound(f"photo {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidInput(f"{str(path)!r} is not a readable photo: {exc}") from None


def write_photo(arr: np.ndarray, path: Path, fmt: str = "png", quality: int = 95) -> None:
    """Save ``arr`` with no metadata: a new image from the pixels (no EXIF, GPS, XMP, ICC
    profile, comments or thumbnails of the original), written atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    im = Image.fromarray(arr, "RGB")
    if fmt == "jpg":
        im.save(tmp, format="JPEG", quality=quality)
    else:
        im.save(tmp, format="PNG")
    tmp.replace(path)


def save_png(image, path: Path) -> None:
    """``[3, H, W]`` float in [0, 1] -> 8-bit RGB PNG (a face crop)."""
    write_photo((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy(), path)


@dataclass
class Face:
    """One face of a photo: its detection, the photo->crop ``matrix`` and the aligned crop."""

    box: list[float]
    keypoints: list[list[float]]
    score: float
    matrix: np.ndarray
    crop: object  # torch.Tensor [3, s, s]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def to_json(self) -> dict:
        import numpy as np

        return {"box": [round(v, 2) for v in self.box], "keypoints": [[round(a, 2), round(b, 2)] for a, b in self.keypoints],
                "score": round(self.score, 4), "matrix": np.round(self.matrix, 6).tolist(), "width_px": round(self.width, 1)}


def find_faces(photo: np.ndarray, size: int, alignment: str, model: str | None, detector) -> list[Face]:
    """Every face of ``photo`` with its aligned ``size`` crop (``landmarks``), or the one
    ``center`` crop / whole-photo resize the other alignments take as the face."""
    import numpy as np
    import torch

    from photoveil.facemodels.align import CENTER_CROP_FRACTION, landmark_matrix, model_template
    from photoveil.facemodels.regions import aligned_crop

    image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
    h, w = photo.shape[:2]
    if alignment == "landmarks":
        kind, zoom = model_template(model)
        faces = []
        for d in detector.detect(image):
            m = landmark_matrix(d.keypoints, size, zoom, kind)
            faces.append(Face(d.box.tolist(), d.keypoints.tolist(), d.score, m, aligned_crop(image, m, size)))
        return faces
    if alignment == "center":
        side = CENTER_CROP_FRACTION * min(h, w)
        left, top = (w - side) / 2.0, (h - side) / 2.0
        sx = sy = size / side
    else:  # none: the whole photo resized (aspect not kept)
        left = top = 0.0
        sx, sy = size / w, size / h
        side = None
    m = np.array([[sx, 0, (0.5 - left) * sx - 0.5], [0, sy, (0.5 - top) * sy - 0.5]])
    box = [left, top, left + (side or w), top + (side or h)]
    crop = _resized_crop(image, m, size) if alignment == "none" else aligned_crop(image, m, size)
    return [Face(box, [], 1.0, m, crop)]


def _resized_crop(image, matrix, size):
    import torch.nn.functional as F

    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


@dataclass
class Plan:
    """Where one input's outputs go."""

    source: Path
    photo: Path
    stem: Path  # output folder / stem; faces are <stem>.<method>.face<k>.png

    def face(self, k: int, method: str, suffix: str) -> Path:
        return self.stem.parent / f"{self.stem.name}.{method}.face{k}{suffix}"


def plan(photos: list[tuple[Path, Path | None]], out: Path | None, method: str, fmt: str) -> list[Plan]:
    """Output paths of each photo (see the module docstring); no two plans share a path."""
    def rel(f: Path, root: Path | None) -> Path:
        return f.relative_to(root) if root is not None else Path(f.name)

    stems: dict[Path, list[tuple[Path, Path | None]]] = {}
    for f, root in photos:
        base = f.parent if out is None else out / (root.name if root is not None and _many_roots(photos) else "")
        target = (f.parent / f.stem) if out is None else (base / rel(f, root)).with_suffix("")
        stems.setdefault(target, []).append((f, root))
    plans, used = [], set()
    for target, group in stems.items():
        for f, _ in group:
            stem = target if len(group) == 1 else target.with_name(f"{f.stem}_{f.suffix.lstrip('.').lower()}")
            n, first = 2, stem
            while stem in used:  # the same name and extension from two places
                stem, n = first.with_name(f"{first.name}_{n}"), n + 1
            used.add(stem)
            plans.append(Plan(f, stem.with_name(f"{stem.name}.{method}.{fmt}"), stem))
    return sorted(plans, key=lambda p: str(p.source))


def _many_roots(photos) -> bool:
    return len({root for _, root in photos if root is not None} | {None for _, r in photos if r is None}) > 1


__all__ = ["READ_SUFFIXES", "HEIC_SUFFIXES", "FORMATS", "MIN_FACE_PX", "heic_support", "collect", "Found",
           "read_photo", "write_photo", "save_png", "Face", "find_faces", "plan", "Plan", "is_output", "unsupported_reason"]
