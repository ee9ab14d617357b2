"""Aligned faces and clean embeddings, computed once per run (faces also cached on disk)."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from photoveil.errors import InvalidInput
from photoveil.facemodels.embed import embed
from photoveil.imageops import input_hw

log = logging.getLogger(__name__)


class FaceCache:
    """Aligned faces by (path, size, alignment, template), in memory and on disk (uint8).

    Landmark alignment of an image where BlazeFace finds no face falls back to the centre
    crop (LFW photos are centred); the number of fallbacks is counted in ``fallbacks``.
    With ``photos`` (a :class:`~photoveil.evaluation.photos.PhotoIndex`: the user's own
    photos) every face comes from the index instead, found and cropped as ``protect`` does.
    """

    def __init__(self, alignment: str, cache_dir: str | None, progress: bool = True):
        from photoveil.paths import cache_dir as resolve

        self.alignment, self.cache_dir, self.progress = alignment, cache_dir, progress
        self.root = resolve(cache_dir) / "eval-faces"
        self.mem: dict[tuple, dict[str, torch.Tensor]] = {}
        self.fallbacks = 0
        self._detector = None
        self.photos = None

    def _key(self, size: tuple[int, int], model: str | None) -> tuple:
        from photoveil.facemodels.align import model_template

        kind, zoom = model_template(model) if self.alignment == "landmarks" else ("-", 1.0)
        source = "-photo" if self.photos is not None else ""
        return (self.alignment + source, kind, round(float(zoom), 4), int(size[0]))

    def _file(self, key) -> Path:
        return self.root / ("{}-{}-{}-{}.pt".format(*key))

    def get(self, paths: Sequence[Path], size: tuple[int, int], model: str | None = None) -> torch.Tensor:
        """Aligned faces ``[N, 3, S, S]`` in [0, 1] (square ``size``) for ``paths``."""
        from tqdm.auto import tqdm

        from photoveil.facemodels.align import align_faces

        if size[0] != size[1]:
            raise InvalidInput(f"face alignment makes square crops; input size {size} is not square")
        key = self._key(size, model)
        table = self.mem.get(key)
        if table is None:
            table = {}
            f = self._file(key)
            if f.is_file():
                try:
                    table = torch.load(f, weights_only=True)
                except Exception:  # a corrupt cache file is rebuilt
                    table = {}
            self.mem[key] = table
        missing = [p for p in dict.fromkeys(str(p) for p in paths) if p not in table]
        if missing:
            if self.alignment == "landmarks" and self._detector is None and self.photos is None:
                from photoveil.facemodels.detect import default_detector

                self._detector = default_detector(cache_dir=self.cache_dir)
            for p in tqdm(missing, desc=f"align {key[1]}@{size[0]}", unit="img", disable=not self.progress or None,
                          leave=False, file=sys.stderr):
                if self.photos is not None:
                    table[p] = (self.photos.crop(p, size[0], model) * 255.0).round().to(torch.uint8)
                    continue
                try:
                    face = align_faces([p], size[0], alignment=self.alignment, model=model,
                                       detector=self._detector, pick="center")[0]
                except InvalidInput as exc:
                    if self.alignment != "landmarks" or "no face" not in str(exc):
                        raise
                    self.fallbacks += 1
                    face = align_faces([p], size[0], alignment="center")[0]
                table[p] = (face * 255.0).round().to(torch.uint8)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = self._file(key).with_suffix(f".{os.getpid()}.tmp")  # concurrent runs share the cache
                torch.save(table, tmp)
                tmp.replace(self._file(key))
            except OSError as exc:  # read-only cache: keep going in memory
                log.warning("cannot write the aligned-face cache %s: %s", self.root, exc)
        return torch.stack([table[str(p)] for p in paths]).float() / 255.0

    def embeddings(self, net, name: str, paths: Sequence[Path], batch_size: int = 32) -> dict[str, torch.Tensor]:
        """``{path: embedding}`` of recognizer ``net`` (registry name ``name``) on the clean
        faces aligned natively for it (its own template and input size)."""
        faces = self.get(paths, input_hw(net), model=name)
        return {str(p): e for p, e in zip(paths, embed(net, faces, batch_size))}


__all__ = ["FaceCache"]
