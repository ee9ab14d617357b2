"""What an attack is given: the run's :class:`RunContext`, built once before any attack.

The run-wide part (config, selected data, models, clean embeddings, calibrated thresholds)
is built by :func:`build_context`; the protection of one authorized setting
(:class:`Protection`) is attached with :meth:`RunContext.with_protection` before that
setting's attacks run.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from photoveil.errors import InvalidInput, NotFound
from photoveil.evaluation import metrics as M
from photoveil.evaluation.cache import FaceCache
from photoveil.evaluation.config import EvalConfig
from photoveil.evaluation.data import EvalData, select_data
from photoveil.imageops import input_hw, resize_to


class ModelSet:
    """The face networks of a run: loaded from the registry on first use, or the ``models``
    given (tests, custom models), in which case ``evaluated=None`` means every model given."""

    def __init__(self, models: dict[str, nn.Module] | None = None, cache_dir: str | None = None):
        self._models = dict(models or {})
        self.injected = models is not None
        self.cache_dir = cache_dir

    def get(self, name: str):
        if name not in self._models:
            if self.injected:
                raise NotFound(f"unknown model {name!r}; given: {', '.join(self._models)}")
            from photoveil.facemodels import registry

            self._models[name] = registry.load(name, cache_dir=self.cache_dir)
        return self._models[name]

    def role(self, name: str) -> str:
        if self.injected:
            return self.get(name).spec.role
        from photoveil.facemodels import registry

        return registry.get_spec(name).role

    def evaluated(self, cfg: EvalConfig) -> tuple[list[str], list[str]]:
        """(recognizers, attribute models) under evaluation; the authorized models first."""
        if cfg.evaluated is None or tuple(cfg.evaluated) == ("all",):
            if self.injected:
                names = list(self._models)
            else:
                from photoveil.facemodels import registry

                names = [s.name for s in registry.list_specs() if s.role in ("recognizer", "attribute")]
        else:
            names = list(dict.fromkeys(cfg.evaluated))
        for a in cfg.authorized:
            if a not in names:
                names.insert(0, a)
        recs = [n for n in names if self.role(n) == "recognizer"]
        attrs = [n for n in names if self.role(n) == "attribute"]
        other = [n for n in names if n not in recs and n not in attrs]
        if other:
            raise InvalidInput(f"cannot evaluate {', '.join(other)}: not a recognizer or attribute model")
        for a in cfg.authorized:
            if self.role(a) != "recognizer":
                raise InvalidInput(f"authorized model {a!r} is not a face recognizer")
        return recs, attrs


def make_record(*, method: str, authorized: str, evaluated_model: str, metric: str, value: float | None,
                attack: str, transform: str = "none", params: dict | None = None, role: str = "", n: int = 0,
                **extra) -> dict:
    """One result record (the format is described in :mod:`photoveil.evaluation`)."""
    return {"method": method, "authorized": authorized, "evaluated_model": evaluated_model, "metric": metric,
            "value": None if value is None else round(float(value), 6), "attack": attack, "transform": transform,
            "params": params or {}, "role": role, "n": n, **extra}


@dataclass
class Protection:
    """One authorized setting's protection of the run's ``data.protected_paths``."""

    setting: tuple[str, ...]        # the authorized model(s) protected for together
    protector: Any
    size: tuple[int, int]           # the protected images' (H, W): the largest authorized input size
    originals: torch.Tensor         # [N, 3, H, W] clean faces, aligned for setting[0]
    images: torch.Tensor            # [N, 3, H, W] their protected uploads
    uploads: dict[str, torch.Tensor]  # path -> protected upload
    params: dict                    # the protector's config as the records' params

    @property
    def authorized(self) -> str:
        """The records' ``authorized`` field."""
        return "+".join(self.setting)


@dataclass
class RunContext:
    """Everything an attack reads. ``timings`` is the run's (attacks add their stages);
    ``out_dir`` (None: no files) is where attacks may write artifacts."""

    cfg: EvalConfig
    data: EvalData
    models: ModelSet
    faces: FaceCache
    recognizers: list[str]
    attribute_models: list[str]
    clean: dict[str, dict[str, torch.Tensor]]   # recognizer -> path -> clean embedding
    kappa_cal: dict[str, float | None]           # recognizer -> calibrated threshold (None: off)
    calibration: list[dict] = field(default_factory=list)   # the calibration records
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    protection: Protection | None = None         # the authorized setting under attack

    def model(self, name: str):
        return self.models.get(name)

    def seen_by(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """The protection's ``images`` (aligned for its ``setting[0]``) as recognizer ``name``
        reads them: an unauthorized one re-aligns them onto its own template at its input
        size, as a service that runs its own aligner on an upload would
        (:func:`photoveil.facemodels.align.realign`); an authorized one reads them as
        protected for it (resized). Without landmark alignment every model shares one
        geometry and only a resize is done."""
        from photoveil.facemodels.align import realign

        hw = input_hw(self.model(name))
        if self.cfg.alignment != "landmarks" or self.protection is None or name in self.protection.setting:
            return resize_to(images, hw)
        return realign(images, self.protection.setting[0], name, hw[0])

    def with_protection(self, protection: Protection) -> RunContext:
        return dataclasses.replace(self, protection=protection)

    def record(self, *, method: str | None = None, **fields) -> dict:
        """A record of this run (``method`` defaults to the config's)."""
        return make_record(method=method or self.cfg.method, **fields)


def calibrate(cfg: EvalConfig, data: EvalData, faces: FaceCache, net, name: str) -> tuple[float | None, list[dict]]:
    """Per-model threshold: the one maximising clean verification accuracy on the
    calibration pairs (train identities, disjoint from the test identities), and its records."""
    from photoveil.evaluation.lfw import best_threshold

    if not data.calib_pairs:
        return None, []
    paths = sorted({p for pair in data.calib_pairs for p in (pair.path_a, pair.path_b)})
    emb = faces.embeddings(net, name, paths, cfg.batch_size)
    a = torch.stack([emb[str(p.path_a)] for p in data.calib_pairs])
    b = torch.stack([emb[str(p.path_b)] for p in data.calib_pairs])
    scores = M.cosine(a, b).double().numpy()
    same = torch.tensor([p.same for p in data.calib_pairs]).numpy()
    thr = best_threshold(scores, same)
    acc = float(((scores > thr) == same).mean())
    records = [make_record(method="clean", authorized="-", evaluated_model=name, metric=metric, value=value,
                           attack="calibration", role="calibration", n=len(data.calib_pairs))
               for metric, value in (("kappa_calibrated", thr), ("calibration_accuracy", acc))]
    return thr, records


def build_context(cfg: EvalConfig, models: ModelSet, faces: FaceCache, data: EvalData | None = None,
                  timings: dict[str, float] | None = None, out_dir: Path | None = None) -> RunContext:
    """Select the data (unless given), resolve the evaluated models, embed the clean images
    with every recognizer and calibrate its threshold."""
    data = data if data is not None else select_data(cfg)
    timings = timings if timings is not None else {}
    recognizers, attrs = models.evaluated(cfg)
    t0 = time.perf_counter()
    clean = {n: faces.embeddings(models.get(n), n, data.all_paths, cfg.batch_size) for n in recognizers}
    kappa_cal, calibration = {}, []
    for n in recognizers:
        kappa_cal[n], recs = calibrate(cfg, data, faces, models.get(n), n)
        calibration += recs
    timings["clean_embed_s"] = time.perf_counter() - t0
    return RunContext(cfg, data, models, faces, recognizers, attrs, clean, kappa_cal, calibration, timings, out_dir)


__all__ = ["ModelSet", "Protection", "RunContext", "build_context", "calibrate", "make_record"]
