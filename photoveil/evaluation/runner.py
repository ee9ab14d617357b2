"""The evaluation driver behind ``photoveil evaluate``: one run protects a deterministic
(seeded) subset of *test* identities with one method and measures it with every selected
attack (see :mod:`photoveil.evaluation` for what each measures and the records' format).

The run: select the data and embed the clean images (:func:`~.context.build_context`),
then for each authorized setting (all authorized models together, or one at a time with
``separately``) protect the images, record the image metrics, run the selected attacks of
:mod:`.attacks` in registry order on a :class:`~.context.RunContext` carrying that
protection, and with ``--sweep`` re-protect along one hyper-parameter. Results are written
after every attack, so a long run leaves usable partial results.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from photoveil.errors import InvalidInput
from photoveil.evaluation import attacks
from photoveil.evaluation.attacks import abuse, image
from photoveil.evaluation.cache import FaceCache
from photoveil.evaluation.config import ATTACKS, METHODS, EvalConfig, parse_sweep
from photoveil.evaluation.context import ModelSet, Protection, RunContext, build_context
from photoveil.evaluation.data import EvalData, select_data
from photoveil.evaluation.protectors import build_protector, protector_params
from photoveil.evaluation.report import save_examples, write_outputs
from photoveil.imageops import input_hw


class Evaluation:
    """One ``photoveil evaluate`` run.

    Args:
        cfg: the run's :class:`EvalConfig`.
        models: optional ``{name: FaceNet}`` to use instead of the registry (tests, custom
            models); with it, ``evaluated=None`` means every model given.

    After :meth:`run`: ``records`` (the results), ``timings`` (seconds per stage) and
    ``extras`` (data sizes, alignment fallbacks), as written to the run folder.
    """

    def __init__(self, cfg: EvalConfig, models: dict[str, nn.Module] | None = None):
        self.cfg = cfg
        self.models = ModelSet(models, cfg.cache_dir)
        self.records: list[dict] = []
        self.faces = FaceCache(cfg.alignment, cfg.cache_dir, cfg.progress)
        self.timings: dict[str, float] = {}
        self.extras: dict[str, Any] = {}

    def model(self, name: str):
        return self.models.get(name)

    def protect(self, ctx: RunContext, setting: tuple[str, ...], extra: dict | None = None,
                preset: str | None = None) -> Protection:
        """Protect the run's ``data.protected_paths`` for the authorized ``setting`` (with the
        hyper-parameters ``extra`` over the config's, from ``preset`` instead of the config's)."""
        cfg, data = self.cfg, ctx.data
        if preset is not None:
            cfg = dataclasses.replace(cfg, preset=preset)
        nets = [self.model(a) for a in setting]
        size = max({input_hw(n) for n in nets})
        originals = self.faces.get(data.protected_paths, size, model=setting[0])
        gallery = labels = None
        if cfg.method == "fmd":
            gallery = self.faces.get(data.gallery, size, model=setting[0])
            labels = torch.tensor(data.gallery_labels)
        protector = build_protector(cfg, nets, size, gallery, labels, extra)
        t0 = time.perf_counter()
        out = protector.protect(originals)
        self.timings.setdefault("protect_s", 0.0)
        self.timings["protect_s"] += time.perf_counter() - t0
        uploads = {str(p): img for p, img in zip(data.protected_paths, out)}
        images = torch.stack([uploads[str(p)] for p in data.protected_paths])
        return Protection(tuple(setting), protector, size, originals, images, uploads, protector_params(protector))

    def sweep(self, ctx: RunContext) -> list[dict]:
        """Abuse + image metrics of the setting re-protected at each swept value."""
        key, values = self.cfg.sweep
        records = []
        for v in values:
            if key == "preset":
                swept = self.protect(ctx, ctx.protection.setting, preset=v)
                sp = {**swept.params, "preset": v, "sweep": key}
            else:
                swept = self.protect(ctx, ctx.protection.setting, extra={key: v})
                sp = {**ctx.protection.params, key: v, "sweep": key}
            records += abuse.measure(ctx, swept.uploads, "none", sp, attack="sweep", with_clean=False)
            records += image.measure(ctx, swept.images, sp, attack="sweep")
        return records

    def _checkpoint(self, out_dir: Path | None, t_start: float) -> None:
        """Write what is measured so far."""
        if out_dir is not None:
            self.timings["total_s"] = time.perf_counter() - t_start
            write_outputs(out_dir, self.cfg, self.records, self.timings, self.extras)

    def run(self, out_dir: Path | None = None) -> list[dict]:
        cfg = self.cfg
        t_start = time.perf_counter()
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        if cfg.uses_photos:  # the user's own photos: faces found as protect finds them
            from photoveil.evaluation.photos import PhotoIndex, select_photos

            t0 = time.perf_counter()
            self.faces.photos = PhotoIndex.open(cfg.data, cfg.cache_dir)
            data = select_photos(cfg, self.faces.photos)
            self.timings["find_faces_s"] = time.perf_counter() - t0
            self.extras["photos"] = self.faces.photos.summary()
        else:
            data = select_data(cfg)
        if "reconstruction" in cfg.attacks and len(data.train_images) < 2:
            raise InvalidInput(f"the reconstruction attacks train on photos of people not evaluated; found "
                               f"{len(data.train_images)} (use --identities below the number of people, or "
                               f"--attacks without reconstruction)")
        self.extras["data"] = data.summary()
        base = build_context(cfg, self.models, self.faces, data, self.timings, out_dir)
        self.records += base.calibration
        for setting in cfg.settings():
            ctx = base.with_protection(self.protect(base, setting))
            self.records += image.run(ctx)
            for name in attacks.selected(cfg.attacks):
                records = attacks.get_attack(name)(ctx)
                self.records += records
                if records:
                    self._checkpoint(out_dir, t_start)
            if out_dir is not None:
                name = f"examples-{ctx.protection.authorized}.png"
                shown = ctx.data.protected_paths[:8]
                save_examples(out_dir / name, ctx.protection.originals[:8], ctx.protection.images[:8],
                              names=[ctx.data.person_of(p) for p in shown],
                              title=f"{cfg.method} for {ctx.protection.authorized}: original vs uploaded")
                self.extras.setdefault("examples", []).append(name)
            if cfg.sweep:
                t0 = time.perf_counter()
                self.records += self.sweep(ctx)
                self.timings["sweep_s"] = time.perf_counter() - t0
        self.timings["total_s"] = time.perf_counter() - t_start
        self.extras["alignment_fallbacks"] = self.faces.fallbacks
        if out_dir is not None:
            write_outputs(out_dir, cfg, self.records, self.timings, self.extras)
        return self.records


def run_evaluation(cfg: EvalConfig, out_dir: str | Path | None = None,
                   models: dict[str, nn.Module] | None = None) -> list[dict]:
    """Convenience: ``Evaluation(cfg, models).run(out_dir)``."""
    return Evaluation(cfg, models).run(Path(out_dir) if out_dir is not None else None)


def records_by(records: list[dict], **match) -> list[dict]:
    """Records whose fields equal every ``match`` item (handy in tests and notebooks)."""
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


__all__ = ["ATTACKS", "METHODS", "EvalConfig", "EvalData", "Evaluation", "FaceCache", "RunContext",
           "build_protector", "parse_sweep", "records_by", "run_evaluation", "select_data"]
