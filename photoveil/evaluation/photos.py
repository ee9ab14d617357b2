"""Your own labelled photos: ``photoveil evaluate --data DIR`` on ``DIR/<person>/<photo>``.

The photos may be anything ``photoveil protect`` reads (full-size phone photos, EXIF
rotations, several faces): each is oriented as a viewer shows it, its faces are found the
way ``protect`` finds them (the multi-scale BlazeFace pass), and the **largest** face is
taken as the person of its folder (a photo with several faces is counted in the report).
A photo where no face is found is left out of the run and named in the report with the
reason, never replaced by a guess.

Faces are found only for the photos a run selects (:func:`select_photos`), so the tree
may be large. Detections are cached on disk (``<cache>/eval-photo-faces.json``, keyed by the file's
absolute path, size and modification time), so a re-run on the same folder only reads
the photos again.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from photoveil.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

CACHE_FILE = "eval-photo-faces.json"
PATCH_FACE_PX = 320      # a face patch keeps the face at most this wide (crops are <= 160 px)
PATCH_CONTEXT = 2.2      # patch side as a multiple of the face box (every model's template fits)
PATCHES_KEPT = 512       # face patches held in memory (~1.5 MB each); others are re-read


def list_photos(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{person: photos}`` under ``root`` (``root/images`` for the LFW layout): one folder
    per person, photos found recursively inside it, outputs of ``photoveil protect`` left
    out. Reads only file names, so it is the up-front check of ``--data``.

    Raises :class:`NotFound` for a missing folder and :class:`InvalidInput` when fewer than
    two people have two readable photos each (identification needs a gallery photo and a
    probe photo per person, and at least two people).
    """
    from photoveil.client.photos import is_output, readable_suffixes
    from photoveil.data.faces import images_root

    base = images_root(root)
    readable = readable_suffixes()
    people: dict[str, list[Path]] = {}
    for entry in sorted(base.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            files = sorted(f for f in entry.rglob("*") if f.is_file() and f.suffix.lower() in readable
                           and not is_output(f) and not f.name.startswith("."))
            if files:
                people[entry.name] = files
    enough = [p for p, files in people.items() if len(files) >= 2]
    if len(enough) < 2:
        raise InvalidInput(
            f"--data {str(base)!r} needs >= 2 person folders with >= 2 photos each "
            f"(layout DIR/<person>/<photo>; formats {', '.join(s.lstrip('.') for s in readable)}); "
            f"found {len(enough)} ({', '.join(f'{p}: {len(f)}' for p, f in people.items()) or 'no person folders'})")
    return people


@dataclass
class PhotoFace:
    """The face used for one photo: BlazeFace keypoints in the oriented photo's pixels."""

    keypoints: list[list[float]]
    box: list[float]
    faces: int                    # faces found in the photo
    hw: tuple[int, int]           # oriented photo size


@dataclass
class PhotoIndex:
    """The photos of a ``--data`` folder and the face each contributes, found on demand
    (:meth:`locate`) so a large tree only costs the photos a run uses."""

    root: Path
    people: dict[str, list[Path]]
    cache_dir: str | None = None
    faces: dict[str, PhotoFace] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # path -> reason
    detector: object = None
    _patches: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike, cache_dir: str | None = None, detector=None) -> "PhotoIndex":
        """List the photos (:func:`list_photos`) and read the detection cache."""
        from photoveil.data.faces import images_root

        index = cls(images_root(root), list_photos(root), cache_dir, detector=detector)
        index._cache = index._read_cache()
        return index

    @property
    def cache_file(self) -> Path:
        from photoveil.paths import cache_dir as resolve

        return resolve(self.cache_dir) / CACHE_FILE

    def _read_cache(self) -> dict:
        try:
            return json.loads(self.cache_file.read_text()) if self.cache_file.is_file() else {}
        except (OSError, ValueError):  # a corrupt cache is rebuilt
            return {}

    def folder(self):
        """Every photo not known to lack a face, as an
        :class:`~photoveil.data.faces.IdentityFolder`."""
        from photoveil.data.faces import IdentityFolder

        images = {p: tuple(f for f in files if str(f) not in self.skipped) for p, files in self.people.items()}
        return IdentityFolder(self.root, {p: v for p, v in images.items() if v})

    def locate(self, paths, progress: bool = True) -> list[str]:
        """Find the face of each of ``paths`` not yet located; returns the paths where
        none was found (now in :attr:`skipped`)."""
        from tqdm.auto import tqdm

        from photoveil.client.photos import read_photo

        todo = [str(p) for p in dict.fromkeys(str(p) for p in paths) if str(p) not in self.faces
                and str(p) not in self.skipped]
        missing, changed = [], False
        for path in tqdm(todo, desc="find faces", unit="photo", disable=not progress or None, leave=False,
                         file=sys.stderr):
            key = _stamp(Path(path))
            hit = self._cache.get(key)
            if hit is None:
                try:
                    photo = read_photo(Path(path))
                except (InvalidInput, NotFound) as exc:
                    self.skipped[path] = str(exc)
                    missing.append(path)
                    continue
                hit = self._detect(photo)
                self._cache[key] = hit
                changed = True
                if hit["faces"]:
                    self._keep_patch(path, photo, hit["box"])
            if hit["faces"] == 0:
                h, w = hit["hw"]
                self.skipped[path] = f"no face found in the {w}x{h} photo"
                missing.append(path)
            else:
                self.faces[path] = PhotoFace(hit["keypoints"], hit["box"], hit["faces"], tuple(hit["hw"]))
        if changed:
            self._write_cache()
        return missing

    def _detect(self, photo) -> dict:
        if self.detector is None:
            from photoveil.facemodels.multiscale import default_multiscale

            self.detector = default_multiscale(cache_dir=self.cache_dir)
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
        found = self.detector.detect(image)
        if not found:
            return {"faces": 0, "hw": list(photo.shape[:2])}
        best = max(found, key=lambda d: d.area)
        return {"keypoints": [[float(a), float(b)] for a, b in best.keypoints],
                "box": [float(v) for v in best.box], "faces": len(found), "hw": list(photo.shape[:2])}

    def _write_cache(self) -> None:
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._cache))
            tmp.replace(self.cache_file)
        except OSError as exc:  # read-only cache: detections are redone next time
            log.warning("cannot write the photo-face cache %s: %s", self.cache_file, exc)

    def _keep_patch(self, path: str, photo, box) -> tuple[torch.Tensor, "np.ndarray"]:
        """The face's surroundings, shrunk so the face is at most PATCH_FACE_PX wide, and the
        photo->patch matrix: every crop of the run is cut from it, not from the full photo."""
        import numpy as np
        import torch.nn.functional as F

        h, w = photo.shape[:2]
        bw = max(1.0, box[2] - box[0], box[3] - box[1])
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, PATCH_CONTEXT * bw / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        part = torch.from_numpy(photo[y0:y1, x0:x1]).permute(2, 0, 1).float()
        scale = min(1.0, PATCH_FACE_PX / bw)
        if scale < 1.0:
            hh, ww = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
            part = F.interpolate(part[None], size=(hh, ww), mode="bilinear", antialias=True, align_corners=False)[0]
        sx, sy = part.shape[2] / (x1 - x0), part.shape[1] / (y1 - y0)
        # patch pixel q <- photo pixel p: q = (p - origin + 0.5) * s - 0.5
        to_patch = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1.0]])
        entry = (part.round().clamp(0, 255).to(torch.uint8), to_patch)
        self._patches[path] = entry
        while len(self._patches) > PATCHES_KEPT:
            self._patches.popitem(last=False)
        return entry

    def crop(self, path: str, size: int, model: str | None) -> torch.Tensor:
        """The aligned ``[3, size, size]`` crop of ``path``'s face on ``model``'s template
        (the crop ``protect`` sends for that model)."""
        import numpy as np

        from photoveil.client.photos import read_photo
        from photoveil.facemodels.align import landmark_matrix, model_template
        from photoveil.facemodels.regions import aligned_crop

        if path not in self.faces:
            self.locate([path], progress=False)
        if path not in self.faces:
            raise InvalidInput(f"{path!r}: {self.skipped[path]}")
        face = self.faces[path]
        entry = self._patches.get(path)
        if entry is None:
            entry = self._keep_patch(path, read_photo(Path(path)), face.box)
        self._patches.move_to_end(path)
        patch, to_patch = entry
        kind, zoom = model_template(model)
        m = np.vstack([landmark_matrix(face.keypoints, size, zoom, kind), [0, 0, 1.0]]) @ np.linalg.inv(to_patch)
        return aligned_crop(patch.float() / 255.0, m[:2], size)

    def summary(self) -> dict:
        """Counts written to ``config.json`` (``photos``) and read by the plain report."""
        return {"root": str(self.root), "people": len(self.people),
                "photos": sum(len(v) for v in self.people.values()), "faces_located": len(self.faces),
                "several_faces": sorted(p for p, f in self.faces.items() if f.faces > 1),
                "skipped": dict(sorted(self.skipped.items()))}


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def select_photos(cfg, index: PhotoIndex):
    """:func:`~photoveil.evaluation.data.select_data` over the photos where a face is found:
    select, find the faces of the selected photos, and select again without any photo
    that has none (each round only detects photos not seen before)."""
    from photoveil.evaluation.data import select_data

    while True:
        data = select_data(cfg, index.folder())
        used = set(data.all_paths) | set(data.train_images) | {p for pr in data.calib_pairs
                                                               for p in (pr.path_a, pr.path_b)}
        if not index.locate(sorted(used), cfg.progress):
            return data


__all__ = ["PhotoFace", "PhotoIndex", "list_photos", "select_photos"]
