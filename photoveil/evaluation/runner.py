"""The evaluation driver behind ``photoveil evaluate``.

One run protects a deterministic (seeded) subset of *test* identities with one method and
measures it with every attack:

* ``abuse`` — Eq. 10 strict accuracy (kappa = 0.2, see :mod:`.metrics` for the reading)
  and top-1 identification on the authorized and every unauthorized recognizer, protected
  and clean, as an authorized x evaluated matrix (the paper's Table 7);
* ``attributes`` — Eq. 11 CosSim of the gear (age / gender / race) and emotion outputs
  between original and protected (plus the expected-age absolute difference), with the
  paper's ``x + delta`` Gaussian-noise baseline (std 0.3) for comparison (Table 8);
* ``reconstruction`` — Level 1 (U-Net decoder trained on *train* identities) and Level 2
  (white-box TV inversion) on unprotected, random-noise and protected uploaded features
  (PMT's ``upload`` point, else the split point) of the (first) authorized model
  (Table 6), next to the SSIM floor of content-free images (grey, the mean training face);
* ``image`` (always) — SSIM, PSNR between original and protected, UP(sigma, kappa);
* ``robustness`` — the abuse metrics after each server-side transform (JPEG 95/75/50,
  0.5x down-scale and back, Gaussian blur sigma 1) applied to the protected upload;
* ``--sweep key=v1,v2,...`` — abuse + image metrics along one hyper-parameter (the
  privacy / utility curve).

Geometry. Every protected image is the original aligned for the (first) authorized model
at the authorized input size. A recognizer under evaluation compares the protected image,
resized to its own input size, with the clean images aligned natively for it (its own
template and size) — what an unauthorized service would hold. MR-PMT with authorized models
of different input sizes works on the largest size and each shallow model sees the image
resized (bilinear, differentiable) to its own size. Attribute models and image metrics
compare original and protected in the same (authorized) geometry, so only the protection
differs.

Records (``results.json``, ``--json``): ``method``, ``authorized`` (``+``-joined),
``evaluated_model``, ``metric``, ``value``, ``attack``, ``transform``, ``params`` (the
protector config, swept values, features kind), plus ``role`` (authorized | unauthorized |
attribute | image | aggregate) and ``n`` (images or pairs behind the value). ``clean_*``
metrics are the same measurement on unprotected images, ``relative_*`` = protected / clean.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput, NotFound
from photoveil.evaluation import metrics as M

log = logging.getLogger(__name__)

METHODS = ("pmt", "fmd", "generator", "none")
ATTACKS = ("abuse", "attributes", "reconstruction", "robustness")
# PMT split when the registry spec names none (DESIGN/issue 4: face-api's first conv +
# max-pool + 3 residual blocks; comparable shallow depths for the others).
FALLBACK_SPLITS = {"faceapi-resnet34": "block3", "faceres": "block2", "mobileface": "stage1",
                   "mobilefacenet": "stage2", "gear": "block2", "emotion": "res1"}
# gear's age bins (<=20, 21-25, 26-30, 31-40, 41-50, 51-60, >60) -> representative ages
AGE_BIN_CENTRES = (18.0, 23.0, 28.0, 35.5, 45.5, 55.5, 65.0)
ATTRIBUTE_NOISE_SIGMA = 0.3  # the paper's x + delta baseline of Table 8


@dataclass
class EvalConfig:
    """Everything one evaluation run depends on (written to ``config.json``)."""

    method: str = "pmt"
    authorized: tuple[str, ...] = ("faceapi-resnet34",)
    evaluated: tuple[str, ...] | None = None     # None: all recognizers + attribute models
    separately: bool = False                     # several --authorized: one PMT each, not MR-PMT
    data: str | None = None
    identities: int = 20
    identity_split: str = "all"                  # "heldout": only the 20 % test identities that
                                                 # generator training holds out (split_identities seed 0)
    images_per_identity: int = 4
    pairs: int = 60
    preset: str | None = "mid"
    overrides: dict[str, Any] = field(default_factory=dict)
    sweep: tuple[str, tuple] | None = None
    attacks: tuple[str, ...] = ATTACKS
    transforms: tuple[str, ...] = tuple(M.TRANSFORMS)
    kappa: float = M.KAPPA
    calib_pairs: int = 100                       # 0: no per-model calibrated kappa
    up_sigma: float = 0.1
    up_kappa: float = 0.3
    alignment: str = "landmarks"
    recon_train_images: int = 1000
    recon_test_images: int = 16
    recon_epochs: int = 30
    recon_width: int = 32
    invert_steps: int = 200
    invert_alpha: float = 4.0
    invert_tv: float = 0.05
    seed: int = 0
    batch_size: int = 32
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.authorized = tuple(self.authorized)
        if self.method not in METHODS:
            raise InvalidInput(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.authorized:
            raise InvalidInput("give at least one --authorized recognizer")
        if self.method == "fmd" and len(self.authorized) > 1:
            self.separately = True  # FMD protects for one authorized model at a time
        if self.identity_split not in ("all", "heldout"):
            raise InvalidInput(f"identity_split must be all or heldout, got {self.identity_split!r}")
        bad = set(self.attacks) - set(ATTACKS)
        if bad:
            raise InvalidInput(f"unknown attack(s) {sorted(bad)}; accepted: {', '.join(ATTACKS)}")
        bad = set(self.transforms) - set(M.TRANSFORMS)
        if bad:
            raise InvalidInput(f"unknown transform(s) {sorted(bad)}; accepted: {', '.join(M.TRANSFORMS)}")
        for name, value, lo in (("identities", self.identities, 2), ("images_per_identity", self.images_per_identity, 2),
                                ("pairs", self.pairs, 2), ("recon_train_images", self.recon_train_images, 2),
                                ("recon_test_images", self.recon_test_images, 1), ("recon_epochs", self.recon_epochs, 1),
                                ("invert_steps", self.invert_steps, 1)):
            if not isinstance(value, int) or value < lo:
                raise InvalidInput(f"{name} must be an int >= {lo}, got {value!r}")
        if not 0.0 <= self.kappa < 1.0:
            raise InvalidInput(f"kappa must be in [0, 1), got {self.kappa}")


# ------------------------------------------------------------------------------ helpers
def input_hw(net) -> tuple[int, int]:
    size = net.spec.input_size
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_to(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(hw):
        return images
    return F.interpolate(images, size=hw, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


class ResizeTo(nn.Module):
    """Differentiable bilinear resize to a fixed ``(H, W)`` (MR-PMT front of a shallow model)."""

    def __init__(self, hw: tuple[int, int]):
        super().__init__()
        self.hw = tuple(hw)

    def forward(self, x):
        return x if tuple(x.shape[-2:]) == self.hw else F.interpolate(x, size=self.hw, mode="bilinear",
                                                                       align_corners=False)


def split_of(net, override: str | None = None) -> str:
    """The PMT / feature split point of ``net``: ``override`` (``"deep"``: the spec's deep
    split), the spec's default, or :data:`FALLBACK_SPLITS`."""
    spec = net.spec
    point = spec.resolve_split(override) or FALLBACK_SPLITS.get(spec.name)
    if point is None:
        point = next(iter(spec.split_points), None)
    if point is None or point not in spec.split_points:
        raise InvalidInput(f"{spec.name} has no split point {point!r}; named split points: "
                           f"{', '.join(spec.split_points) or 'none'}")
    return point


def embed(net, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Recognizer embeddings ``[N, D]`` of images resized to the net's input size."""
    hw = input_hw(net)
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out.append(net(resize_to(chunk, hw)).float().flatten(1))
    return torch.cat(out) if out else torch.empty(0)


def attributes(net, images: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Attribute-model outputs ``{name: [N, K]}`` (probabilities) at the net's input size."""
    hw = input_hw(net)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out = net(resize_to(chunk, hw))
            if not isinstance(out, dict):
                out = {net.spec.name: out}
            for k, v in out.items():
                parts.setdefault(k, []).append(v.float().reshape(len(chunk), -1))
    return {k: torch.cat(v) for k, v in parts.items()}


class FaceCache:
    """Aligned faces by (path, size, alignment, template), in memory and on disk (uint8).

    Landmark alignment of an image where BlazeFace finds no face falls back to the centre
    crop (LFW photos are centred); the number of fallbacks is counted in ``fallbacks``.
    """

    def __init__(self, alignment: str, cache_dir: str | None, progress: bool = True):
        from photoveil.paths import cache_dir as resolve

        self.alignment, self.cache_dir, self.progress = alignment, cache_dir, progress
        self.root = resolve(cache_dir) / "eval-faces"
        self.mem: dict[tuple, dict[str, torch.Tensor]] = {}
        self.fallbacks = 0
        self._detector = None

    def _key(self, size: tuple[int, int], model: str | None) -> tuple:
        from photoveil.facemodels.align import model_template

        kind, zoom = model_template(model) if self.alignment == "landmarks" else ("-", 1.0)
        return (self.alignment, kind, round(float(zoom), 4), int(size[0]))

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
            if self.alignment == "landmarks" and self._detector is None:
                from photoveil.facemodels.detect import default_detector

                self._detector = default_detector(cache_dir=self.cache_dir)
            for p in tqdm(missing, desc=f"align {key[1]}@{size[0]}", unit="img", disable=not self.progress or None,
                          leave=False, file=sys.stderr):
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


# ------------------------------------------------------------------------------ data
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

    @property
    def all_paths(self) -> list[Path]:
        return sorted({p for imgs in self.test.values() for p in imgs} | {p.path_b for p in self.pairs})


def select_data(cfg: EvalConfig) -> EvalData:
    """Seeded test identities (>= 2 images each), pairs among them, gallery / queries, and
    Level-1 training images from the remaining identities."""
    from photoveil.data.faces import generate_pairs, scan_identity_folder
    from photoveil.paths import default_lfw_dir

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


# ------------------------------------------------------------------------------ protectors
class IdentityProtector:
    """``--method none``: the upload is the original image (the no-protection baseline)."""

    method = "none"

    def __init__(self):
        self.config = None

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        return images.clone()


def _config_fields(method: str) -> set[str]:
    from photoveil.client.protect import get_protector

    return {f.name for f in dataclasses.fields(get_protector(method).Config)}


def build_protector(cfg: EvalConfig, nets: list, size: tuple[int, int], gallery: torch.Tensor | None = None,
                    gallery_labels: torch.Tensor | None = None, extra: dict | None = None):
    """The protector of ``cfg.method`` for authorized ``nets`` (images at ``size``)."""
    from photoveil.client.protect import get_protector

    if cfg.method == "none":
        return IdentityProtector()
    cls = get_protector(cfg.method)
    values = {"seed": cfg.seed, "progress": cfg.progress, "batch_size": 16, **cfg.overrides, **(extra or {})}
    try:
        if cfg.method == "generator":
            checkpoint = values.get("checkpoint")
            if checkpoint and Path(checkpoint).is_dir():  # an exported program: evaluate what the phone runs
                from photoveil.client.runtime import PteGenerator

                values = {**(cls.PRESETS[cfg.preset] if cfg.preset else {}), **values}
                values.pop("checkpoint")
                return PteGenerator(checkpoint, **values)
            return cls.from_preset(cfg.preset, **values) if cfg.preset else cls(cls.Config(**values))
        if cfg.method == "pmt":
            from photoveil.client.protect.pmt import check_upload
            from photoveil.client.protect.shallow import ShallowModel, from_facenet

            # the preset + overrides decide split / upload / layers; the taps are cut here
            # (resized per model for MR-PMT) and the protector gets them ready-made
            conf = cls.preset_config(cfg.preset, **values) if cfg.preset else cls.Config(**values)
            models = []
            for net in nets:
                split = split_of(net, conf.split)
                if conf.upload:
                    check_upload(net.spec, split, conf.upload)
                sm = from_facenet(net, [*conf.layers, split])
                if input_hw(net) != tuple(size):
                    segs = list(sm.segments)
                    segs[0] = nn.Sequential(ResizeTo(input_hw(net)), segs[0])
                    sm = ShallowModel(segs, sm.name, sm.points)
                models.append(sm)
            return cls(models, conf)
        from photoveil.client.protect.fmd import GalleryClassifier

        net = nets[0]
        split_override = values.pop("split", None)
        clf = GalleryClassifier.from_facenet(net, split_of(net, split_override), resize_to(gallery, input_hw(net)),
                                             gallery_labels)
        if input_hw(net) != tuple(size):
            raise InvalidInput("FMD images must be at the authorized model's input size")
        values.pop("layers", None)
        if cfg.preset:
            return cls.from_preset(cfg.preset, clf, **values)
        return cls(clf, cls.Config(**values))
    except (ValueError, TypeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"bad {cfg.method} hyper-parameters: {exc}") from None


# ------------------------------------------------------------------------------ the run
class Evaluation:
    """One ``photoveil evaluate`` run.

    Args:
        cfg: the run's :class:`EvalConfig`.
        models: optional ``{name: FaceNet}`` to use instead of the registry (tests, custom
            models); with it, ``evaluated=None`` means every model given.
    """

    def __init__(self, cfg: EvalConfig, models: dict[str, nn.Module] | None = None):
        self.cfg = cfg
        self._models = dict(models or {})
        self._injected = models is not None
        self.records: list[dict] = []
        self.faces = FaceCache(cfg.alignment, cfg.cache_dir, cfg.progress)
        self.timings: dict[str, float] = {}
        self.extras: dict[str, Any] = {}

    # -- models --------------------------------------------------------------------------
    def model(self, name: str):
        if name not in self._models:
            if self._injected:
                raise NotFound(f"unknown model {name!r}; given: {', '.join(self._models)}")
            from photoveil.facemodels import registry

            self._models[name] = registry.load(name, cache_dir=self.cfg.cache_dir)
        return self._models[name]

    def role(self, name: str) -> str:
        if self._injected:
            return self.model(name).spec.role
        from photoveil.facemodels import registry

        return registry.get_spec(name).role

    def evaluated(self) -> tuple[list[str], list[str]]:
        """(recognizers, attribute models) under evaluation."""
        if self.cfg.evaluated is None or tuple(self.cfg.evaluated) == ("all",):
            if self._injected:
                names = list(self._models)
            else:
                from photoveil.facemodels import registry

                names = [s.name for s in registry.list_specs() if s.role in ("recognizer", "attribute")]
        else:
            names = list(dict.fromkeys(self.cfg.evaluated))
        for a in self.cfg.authorized:
            if a not in names:
                names.insert(0, a)
        recs = [n for n in names if self.role(n) == "recognizer"]
        attrs = [n for n in names if self.role(n) == "attribute"]
        other = [n for n in names if n not in recs and n not in attrs]
        if other:
            raise InvalidInput(f"cannot evaluate {', '.join(other)}: not a recognizer or attribute model")
        for a in self.cfg.authorized:
            if self.role(a) != "recognizer":
                raise InvalidInput(f"authorized model {a!r} is not a face recognizer")
        return recs, attrs

    # -- records -------------------------------------------------------------------------
    def add(self, *, authorized: str, evaluated_model: str, metric: str, value: float, attack: str,
            transform: str = "none", params: dict | None = None, role: str = "", n: int = 0,
            method: str | None = None, **extra) -> None:
        rec = {"method": method or self.cfg.method, "authorized": authorized, "evaluated_model": evaluated_model,
               "metric": metric, "value": None if value is None else round(float(value), 6), "attack": attack,
               "transform": transform, "params": params or {}, "role": role, "n": n, **extra}
        self.records.append(rec)

    # -- measurements --------------------------------------------------------------------
    def clean_embeddings(self, data: EvalData, name: str) -> dict[str, torch.Tensor]:
        net = self.model(name)
        paths = data.all_paths
        faces = self.faces.get(paths, input_hw(net), model=name)
        emb = embed(net, faces, self.cfg.batch_size)
        return {str(p): e for p, e in zip(paths, emb)}

    def calibrate(self, data: EvalData, name: str) -> float | None:
        """Per-model threshold: the one maximising clean verification accuracy on the
        calibration pairs (train identities, disjoint from the test identities)."""
        from photoveil.facemodels.lfw_eval import best_threshold

        if not data.calib_pairs:
            return None
        net = self.model(name)
        paths = sorted({p for pair in data.calib_pairs for p in (pair.path_a, pair.path_b)})
        emb = dict(zip(map(str, paths), embed(net, self.faces.get(paths, input_hw(net), model=name),
                                              self.cfg.batch_size)))
        a = torch.stack([emb[str(p.path_a)] for p in data.calib_pairs])
        b = torch.stack([emb[str(p.path_b)] for p in data.calib_pairs])
        scores = M.cosine(a, b).double().numpy()
        same = torch.tensor([p.same for p in data.calib_pairs]).numpy()
        thr = best_threshold(scores, same)
        acc = float(((scores > thr) == same).mean())
        for metric, value in (("kappa_calibrated", thr), ("calibration_accuracy", acc)):
            self.add(authorized="-", evaluated_model=name, metric=metric, value=value, attack="calibration",
                     role="calibration", n=len(data.calib_pairs), method="clean")
        return thr

    def abuse(self, data: EvalData, setting: tuple[str, ...], protected: dict[str, torch.Tensor],
              recognizers: list[str], transform: str, params: dict, attack: str = "abuse",
              with_clean: bool = True) -> dict[str, float]:
        """Strict accuracy + top-1 of every recognizer on the (transformed) protected uploads."""
        auth = "+".join(setting)
        x1 = [str(p.path_a) for p in data.pairs]
        x2 = [str(p.path_b) for p in data.pairs]
        same = torch.tensor([p.same for p in data.pairs])
        out = {}
        unauth: dict[str, list[float]] = {}
        for name in recognizers:
            net = self.model(name)
            ref = self._clean[name]
            role = "authorized" if name in setting else "unauthorized"
            prot_paths = list(protected)
            imgs = M.apply_transform(transform, torch.stack([protected[p] for p in prot_paths]))
            pe = dict(zip(prot_paths, embed(net, imgs, self.cfg.batch_size)))
            e1 = torch.stack([pe[p] for p in x1])
            cos_self = M.cosine(e1, torch.stack([ref[p] for p in x1]))
            cos_pair = M.cosine(e1, torch.stack([ref[p] for p in x2]))
            qe = torch.stack([pe[str(p)] for p in data.queries])
            ge = torch.stack([ref[str(p)] for p in data.gallery])
            kappas = {"": self.cfg.kappa}
            if self._kappa_cal.get(name) is not None:
                kappas["_cal"] = self._kappa_cal[name]
            vals = {}
            for suffix, k in kappas.items():
                vals[f"strict_accuracy{suffix}"] = M.strict_accuracy(cos_self, cos_pair, same, k, "gate")
                vals[f"strict_accuracy_joint{suffix}"] = M.strict_accuracy(cos_self, cos_pair, same, k, "joint")
            vals.update({
                "self_cosine": cos_self.mean().item(),
                "top1": M.identification_top1(ge, torch.tensor(data.gallery_labels), qe,
                                              torch.tensor(data.query_labels)),
            })
            if with_clean:
                if transform == "none":
                    c1 = torch.stack([ref[p] for p in x1])
                    cq = torch.stack([ref[str(p)] for p in data.queries])
                else:  # the same transform on the unprotected upload (x~1 = T(x1))
                    clean_paths = sorted(set(x1) | {str(p) for p in data.queries})
                    faces = self.faces.get([Path(p) for p in clean_paths], input_hw(net), model=name)
                    ce = dict(zip(clean_paths, embed(net, M.apply_transform(transform, faces), self.cfg.batch_size)))
                    c1 = torch.stack([ce[p] for p in x1])
                    cq = torch.stack([ce[str(p)] for p in data.queries])
                c_self = M.cosine(c1, torch.stack([ref[p] for p in x1]))
                c_pair = M.cosine(c1, torch.stack([ref[p] for p in x2]))
                for suffix, k in kappas.items():
                    vals[f"clean_strict_accuracy{suffix}"] = M.strict_accuracy(c_self, c_pair, same, k, "gate")
                    vals[f"clean_strict_accuracy_joint{suffix}"] = M.strict_accuracy(c_self, c_pair, same, k, "joint")
                vals["clean_top1"] = M.identification_top1(ge, torch.tensor(data.gallery_labels), cq,
                                                           torch.tensor(data.query_labels))
                for m in [f"strict_accuracy{s}" for s in kappas] + ["top1"]:
                    c = vals[f"clean_{m}"]
                    vals[f"relative_{m}"] = vals[m] / c if c > 0 else float("nan")
            for metric, value in vals.items():
                n = len(data.queries) if "top1" in metric else len(data.pairs)
                kappa = None if "strict" not in metric else kappas["_cal" if metric.endswith("_cal") else ""]
                self.add(authorized=auth, evaluated_model=name, metric=metric, value=value, attack=attack,
                         transform=transform, params=params, role=role, n=n, kappa=kappa)
                out[f"{name}/{metric}"] = value
                if role == "unauthorized":
                    unauth.setdefault(metric, []).append(value)
        for metric, values in unauth.items():
            if metric in ("strict_accuracy", "strict_accuracy_cal", "top1", "relative_strict_accuracy",
                          "relative_strict_accuracy_cal", "relative_top1"):
                v = sum(values) / len(values)
                self.add(authorized=auth, evaluated_model="mean-unauthorized", metric=metric, value=v, attack=attack,
                         transform=transform, params=params, role="aggregate", n=len(values))
                out[f"mean-unauthorized/{metric}"] = v
        return out

    def image_metrics(self, setting, originals: torch.Tensor, protected: torch.Tensor, params: dict,
                      attack: str = "image") -> dict[str, float]:
        auth = "+".join(setting)
        net = self.model(setting[0])
        vals = {"ssim": M.ssim(originals, protected).mean().item(),
                "psnr": M.psnr(originals, protected).clamp(max=100.0).mean().item()}
        if attack == "image":
            up = M.up_score(lambda x: embed(net, x, self.cfg.batch_size), originals, protected,
                            self.cfg.up_sigma, self.cfg.up_kappa, seed=self.cfg.seed)
            vals.update({"up": up["up"], "up_utility": up["utility"], "up_privacy_1-ssim": up["privacy"]})
        p = {**params, "up_sigma": self.cfg.up_sigma, "up_kappa": self.cfg.up_kappa} if attack == "image" else params
        for metric, value in vals.items():
            self.add(authorized=auth, evaluated_model=setting[0], metric=metric, value=value, attack=attack,
                     params=p, role="image", n=len(originals))
        return vals

    def attribute_attack(self, setting, originals: torch.Tensor, protected: torch.Tensor, attrs: list[str],
                         params: dict) -> None:
        auth = "+".join(setting)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        noisy = (originals + ATTRIBUTE_NOISE_SIGMA * torch.randn(originals.shape, generator=gen)).clamp(0, 1)
        for name in attrs:
            net = self.model(name)
            a0 = attributes(net, originals, self.cfg.batch_size)
            for label, images, method in ((self.cfg.method, protected, None),
                                          ("gaussian-noise", noisy, "gaussian-noise")):
                a1 = attributes(net, images, self.cfg.batch_size)
                p = params if method is None else {"sigma": ATTRIBUTE_NOISE_SIGMA}
                for key, v0 in a0.items():
                    v1 = a1[key]
                    if v0.shape[1] >= 2:
                        self.add(authorized=auth, evaluated_model=name, metric=f"cossim_{key}",
                                 value=M.attribute_cossim(v0, v1).mean().item(), attack="attributes",
                                 params=p, role="attribute", n=len(v0), method=method)
                    if key == "age" and v0.shape[1] == len(AGE_BIN_CENTRES):
                        centres = torch.tensor(AGE_BIN_CENTRES)
                        diff = M.attribute_abs_diff(v0 @ centres, v1 @ centres)
                        self.add(authorized=auth, evaluated_model=name, metric="age_abs_diff_years",
                                 value=diff.mean().item(), attack="attributes", params=p, role="attribute",
                                 n=len(v0), method=method)
                    elif v0.shape[1] == 1:
                        self.add(authorized=auth, evaluated_model=name, metric=f"abs_diff_{key}",
                                 value=M.attribute_abs_diff(v0, v1).mean().item(), attack="attributes",
                                 params=p, role="attribute", n=len(v0), method=method)

    def reconstruction(self, data: EvalData, setting, protector, params: dict, out_dir: Path | None) -> None:
        """Level 1 and Level 2 on the first authorized model's uploaded features (PMT's
        ``upload`` point, else the split point)."""
        from photoveil.client.protect.shallow import from_facenet
        from photoveil.evaluation import reconstruction as R

        cfg = self.cfg
        name = setting[0]
        net = self.model(name)
        hw = self._size
        split = split_of(net, params.get("upload") or params.get("split") or cfg.overrides.get("split"))
        shallow = from_facenet(net, [split])
        front = ResizeTo(input_hw(net))

        def e_c(x):
            return shallow.upload_features(front(x))

        def f(x):
            return embed(net, x, cfg.batch_size)

        test_paths = data.protected_paths[: cfg.recon_test_images]
        x = self.faces.get(test_paths, hw, model=name)
        xt = torch.stack([self._protected[str(p)] for p in test_paths])
        with torch.no_grad():
            z_clean, z_prot = e_c(x), e_c(xt)
        z_noise = R.noise_features(z_clean, z_prot, seed=cfg.seed)
        kinds = {"unprotected": z_clean, "random-noise": z_noise, "protected": z_prot}
        auth = "+".join(setting)
        base = {**params, "split": split}

        def record(level, kind, scores, extra):
            for metric, value in scores.items():
                self.add(authorized=auth, evaluated_model=name, metric=metric, value=value, attack=f"reconstruction-{level}",
                         params={**base, **extra, "features": kind}, role="authorized", n=len(x), features=kind)

        recon_images = {}
        # Level 1: decoder trained on the attacker's (image, feature) pairs of train identities
        t0 = time.perf_counter()
        train_x = self.faces.get(data.train_images, hw, model=name)
        with torch.no_grad():
            train_z = torch.cat([e_c(c) for c in train_x.split(cfg.batch_size)])
        # the floor: what images that carry nothing of the test faces score against them
        # (SSIM rewards smooth outputs: a flat grey face scores ~0.44 on LFW crops)
        floors = {"grey": torch.full_like(x, 0.5), "mean-train-face": train_x.mean(0, keepdim=True).expand_as(x)}
        for kind, ref in floors.items():
            record("floor", kind, R.score(ref.contiguous(), x), {})
        decoder = R.train_decoder(train_x, train_z, epochs=cfg.recon_epochs, width=cfg.recon_width, seed=cfg.seed,
                                  progress=cfg.progress)
        l1 = {"train_images": len(train_x), "epochs": cfg.recon_epochs, "width": cfg.recon_width}
        if out_dir is not None:
            R.save_decoder(out_dir / "decoder-level1.pt", decoder, authorized=name, split=split, **l1)
        for kind, z in kinds.items():
            r = R.reconstruct(decoder, z)
            recon_images[("L1", kind)] = r
            record("l1", kind, R.score(r, x, f, cfg.kappa), l1)
        self.timings["reconstruction_l1_s"] = time.perf_counter() - t0
        # Level 2: white-box inversion through E_c with a TV prior
        t0 = time.perf_counter()
        l2 = {"steps": cfg.invert_steps, "alpha": cfg.invert_alpha, "tv_weight": cfg.invert_tv}
        for kind, z in kinds.items():
            r = R.invert(e_c, z, tuple(x.shape[1:]), steps=cfg.invert_steps, alpha=cfg.invert_alpha / 255.0,
                         tv_weight=cfg.invert_tv, progress=cfg.progress, desc=f"invert[{kind}]")
            recon_images[("L2", kind)] = r
            record("l2", kind, R.score(r, x, f, cfg.kappa), l2)
        self.timings["reconstruction_l2_s"] = time.perf_counter() - t0
        if out_dir is not None:
            save_recon_grid(out_dir / f"reconstruction-{auth}.png", x, xt, recon_images)

    def checkpoint(self, out_dir: Path | None) -> None:
        """Write what is measured so far (a long run leaves usable partial results)."""
        if out_dir is not None:
            self.timings["total_s"] = time.perf_counter() - self._t_start
            write_outputs(out_dir, self)

    # -- driver --------------------------------------------------------------------------
    def settings(self) -> list[tuple[str, ...]]:
        if self.cfg.separately:
            return [(a,) for a in self.cfg.authorized]
        return [tuple(self.cfg.authorized)]

    def protect_set(self, data: EvalData, setting, extra: dict | None = None):
        """(protector, {path: protected image}) for the run's protected images."""
        nets = [self.model(a) for a in setting]
        sizes = {input_hw(n) for n in nets}
        size = max(sizes)
        self._size = size
        originals = self.faces.get(data.protected_paths, size, model=setting[0])
        gallery = labels = None
        if self.cfg.method == "fmd":
            gallery = self.faces.get(data.gallery, size, model=setting[0])
            labels = torch.tensor(data.gallery_labels)
        prot = build_protector(self.cfg, nets, size, gallery, labels, extra)
        t0 = time.perf_counter()
        out = prot.protect(originals)
        self.timings.setdefault("protect_s", 0.0)
        self.timings["protect_s"] += time.perf_counter() - t0
        return prot, originals, {str(p): img for p, img in zip(data.protected_paths, out)}

    def run(self, out_dir: Path | None = None) -> list[dict]:
        cfg = self.cfg
        t_start = self._t_start = time.perf_counter()
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        data = select_data(cfg)
        self.extras["data"] = {"identities": len(data.test), "test_images": len(data.all_paths),
                               "pairs": len(data.pairs), "same_pairs": sum(p.same for p in data.pairs),
                               "queries": len(data.queries), "protected_images": len(data.protected_paths),
                               "train_images": len(data.train_images),
                               "calibration_pairs": len(data.calib_pairs)}
        recognizers, attrs = self.evaluated()
        t0 = time.perf_counter()
        self._clean = {n: self.clean_embeddings(data, n) for n in recognizers}
        self._kappa_cal = {n: self.calibrate(data, n) for n in recognizers}
        self.timings["clean_embed_s"] = time.perf_counter() - t0
        for setting in self.settings():
            prot, originals, protected = self.protect_set(data, setting)
            self._protected = protected
            params = prot.config.to_dict() if prot.config is not None else {}
            params = {k: v for k, v in params.items() if k not in ("progress", "batch_size", "device")}
            params = _jsonable(params)
            prot_tensor = torch.stack([protected[str(p)] for p in data.protected_paths])
            self.image_metrics(setting, originals, prot_tensor, params)
            if "abuse" in cfg.attacks:
                self.abuse(data, setting, protected, recognizers, "none", params)
                self.checkpoint(out_dir)
            if "robustness" in cfg.attacks:
                t0 = time.perf_counter()
                for t in cfg.transforms:
                    self.abuse(data, setting, protected, recognizers, t, params, attack="robustness")
                self.timings["robustness_s"] = time.perf_counter() - t0
                self.checkpoint(out_dir)
            if "attributes" in cfg.attacks and attrs:
                self.attribute_attack(setting, originals, prot_tensor, attrs, params)
                self.checkpoint(out_dir)
            if "reconstruction" in cfg.attacks:
                self.reconstruction(data, setting, prot, params, out_dir)
                self.checkpoint(out_dir)
            if out_dir is not None:
                save_examples(out_dir / f"examples-{'+'.join(setting)}.png", originals[:8], prot_tensor[:8])
            if cfg.sweep:
                t0 = time.perf_counter()
                key, values = cfg.sweep
                for v in values:
                    _, _, swept = self.protect_set(data, setting, extra={key: v})
                    sp = {**params, key: v, "sweep": key}
                    self.abuse(data, setting, swept, recognizers, "none", sp, attack="sweep", with_clean=False)
                    st = torch.stack([swept[str(p)] for p in data.protected_paths])
                    self.image_metrics(setting, originals, st, sp, attack="sweep")
                self.timings["sweep_s"] = time.perf_counter() - t0
        self.timings["total_s"] = time.perf_counter() - t_start
        self.extras["alignment_fallbacks"] = self.faces.fallbacks
        if out_dir is not None:
            write_outputs(out_dir, self)
        return self.records


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


# ------------------------------------------------------------------------------ outputs
def _to_uint8_grid(rows: list[torch.Tensor]):
    import numpy as np

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_examples(path: Path, originals: torch.Tensor, protected: torch.Tensor) -> None:
    """PNG: originals (top row) and their protected uploads (bottom row)."""
    from PIL import Image

    if len(originals) == 0:
        return
    Image.fromarray(_to_uint8_grid([originals, protected])).save(path)


def save_recon_grid(path: Path, x, xt, recon: dict) -> None:
    """PNG: original, protected, then one row per (level, features) reconstruction."""
    from PIL import Image

    n = min(8, len(x))
    rows = [x[:n], xt[:n]] + [r[:n] for r in recon.values()]
    Image.fromarray(_to_uint8_grid(rows)).save(path)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(ev: Evaluation) -> str:
    cfg, recs = ev.cfg, ev.records
    out = [f"# photoveil evaluate — method {cfg.method}, authorized {', '.join(cfg.authorized)}", ""]
    out += [f"Data: {json.dumps(ev.extras.get('data', {}))}; kappa = {cfg.kappa}; seed {cfg.seed}; "
            f"wall time {ev.timings.get('total_s', 0):.0f} s.", ""]

    def matrix(attack, metric, transform="none"):
        sel = [r for r in recs if r["attack"] == attack and r["transform"] == transform]
        models = list(dict.fromkeys(r["evaluated_model"] for r in sel if r["metric"] == metric))
        if not models:
            return None
        rows = []
        for auth in dict.fromkeys(r["authorized"] for r in sel):
            clean = {r["evaluated_model"]: r["value"] for r in sel if r["authorized"] == auth
                     and r["metric"] == f"clean_{metric}"}
            if clean and not rows:
                rows.append(["clean"] + [clean.get(m) for m in models])
            vals = {r["evaluated_model"]: r["value"] for r in sel if r["authorized"] == auth and r["metric"] == metric}
            rows.append([f"{cfg.method}: {auth}"] + [vals.get(m) for m in models])
        return _table(["authorized \\ evaluated"] + models, rows)

    cal = [r for r in recs if r["attack"] == "calibration"]
    if cal:
        models = list(dict.fromkeys(r["evaluated_model"] for r in cal))
        rows = [[m] + [next((r["value"] for r in cal if r["evaluated_model"] == m and r["metric"] == k), None)
                       for k in ("kappa_calibrated", "calibration_accuracy")] for m in models]
        out += ["## Per-model threshold (calibrated on clean pairs of train identities)", "",
                _table(["recognizer", "kappa_calibrated", "clean verification accuracy"], rows), ""]
    for metric, title in (("strict_accuracy", f"Strict accuracy (Eq. 10, gate reading, kappa = {cfg.kappa})"),
                          ("strict_accuracy_cal", "Strict accuracy (Eq. 10, gate reading, per-model calibrated kappa)"),
                          ("strict_accuracy_joint", f"Strict accuracy (Eq. 10, joint reading, kappa = {cfg.kappa})"),
                          ("top1", "Identification top-1"), ("self_cosine", "Mean cos(f(x~1), f(x1))")):
        t = matrix("abuse", metric)
        if t:
            out += [f"## Data abuse — {title}", "", t, ""]
    rob = [r for r in recs if r["attack"] == "robustness" and r["metric"] in (
        "strict_accuracy", "relative_strict_accuracy", "strict_accuracy_cal", "relative_strict_accuracy_cal", "top1",
        "relative_top1")]
    if rob:
        models = list(dict.fromkeys(r["evaluated_model"] for r in rob))
        rows = []
        for (auth, t, m) in dict.fromkeys((r["authorized"], r["transform"], r["metric"]) for r in rob):
            vals = {r["evaluated_model"]: r["value"] for r in rob if (r["authorized"], r["transform"], r["metric"]) == (auth, t, m)}
            rows.append([auth, t, m] + [vals.get(x) for x in models])
        out += ["## Robustness (protected upload transformed by the server)", "",
                _table(["authorized", "transform", "metric"] + models, rows), ""]
    att = [r for r in recs if r["attack"] == "attributes"]
    if att:
        metrics_ = list(dict.fromkeys((r["evaluated_model"], r["metric"]) for r in att))
        rows = []
        for meth in dict.fromkeys(r["method"] for r in att):
            vals = {(r["evaluated_model"], r["metric"]): r["value"] for r in att if r["method"] == meth}
            rows.append([meth] + [vals.get(k) for k in metrics_])
        out += ["## Attribute estimation (Eq. 11 CosSim: lower = more private; age: |difference| years)", "",
                _table(["images"] + [f"{m}/{k}" for m, k in metrics_], rows), ""]
    rec = [r for r in recs if r["attack"].startswith("reconstruction")]
    if rec:
        rows = []
        for (lvl, kind) in dict.fromkeys((r["attack"], r["features"]) for r in rec):
            vals = {r["metric"]: r["value"] for r in rec if r["attack"] == lvl and r["features"] == kind}
            rows.append([lvl, kind] + [vals.get(m) for m in ("ssim", "psnr", "cos", "srra")])
        out += ["## Reconstruction (Table 6: SSIM/PSNR lower = more private; COS/SRRA on the authorized model)", "",
                _table(["attack", "features", "SSIM", "PSNR", "COS", "SRRA"], rows), "",
                "reconstruction-floor: content-free images (flat grey, the mean of the attacker's training faces) "
                "scored the same way; a reconstruction at or below them recovers nothing of the face that the "
                "mean face does not.", ""]
    img = [r for r in recs if r["attack"] == "image"]
    if img:
        out += ["## Image metrics (original vs protected)", "",
                _table(["authorized", "metric", "value"], [[r["authorized"], r["metric"], r["value"]] for r in img]),
                "", "UP(sigma, kappa): utility = I(cos > kappa) on the authorized model; privacy = 1 - SSIM "
                "(substitute for LPIPS, whose weights cannot be fetched offline).", ""]
    sw = [r for r in recs if r["attack"] == "sweep"]
    if sw:
        key = sw[0]["params"]["sweep"]
        pts = list(dict.fromkeys((r["authorized"], r["params"][key]) for r in sw))
        cols = ["strict_accuracy@auth", "strict_accuracy@mean-unauthorized", "strict_accuracy_cal@auth",
                "strict_accuracy_cal@mean-unauthorized", "top1@auth", "top1@mean-unauthorized", "ssim", "psnr"]
        rows = []
        for auth, v in pts:
            sel = [r for r in sw if r["authorized"] == auth and r["params"][key] == v]
            auths = auth.split("+")

            def pick(metric, who):
                vals = [r["value"] for r in sel if r["metric"] == metric and
                        ((who == "auth" and r["evaluated_model"] in auths) or
                         (who == "mean-unauthorized" and r["evaluated_model"] == "mean-unauthorized") or
                         (who == "img" and r["role"] == "image"))]
                return sum(vals) / len(vals) if vals else None

            rows.append([auth, v, pick("strict_accuracy", "auth"), pick("strict_accuracy", "mean-unauthorized"),
                         pick("strict_accuracy_cal", "auth"), pick("strict_accuracy_cal", "mean-unauthorized"),
                         pick("top1", "auth"), pick("top1", "mean-unauthorized"), pick("ssim", "img"),
                         pick("psnr", "img")])
        out += [f"## Privacy / utility along `{key}`", "", _table(["authorized", key] + cols, rows), ""]
    out += ["## Timings (s)", "", _table(["stage", "seconds"], [[k, v] for k, v in ev.timings.items()]), ""]
    return "\n".join(out)


def plot_heatmap(path: Path, ev: Evaluation, metric: str = "strict_accuracy") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    recs = [r for r in ev.records if r["attack"] in ("abuse", "robustness")
            and r["metric"] in (metric, f"clean_{metric}") and r["evaluated_model"] != "mean-unauthorized"]
    if not recs:
        return False
    models = list(dict.fromkeys(r["evaluated_model"] for r in recs))
    rows: dict[str, dict[str, float]] = {"clean": {}}
    for r in recs:
        if r["metric"] == f"clean_{metric}":
            if r["transform"] != "none":
                continue
            label = "clean"
        else:
            label = f"{ev.cfg.method}: {r['authorized']}" + ("" if r["transform"] == "none" else f" / {r['transform']}")
        rows.setdefault(label, {})[r["evaluated_model"]] = r["value"]
    labels = list(rows)
    mat = np.array([[rows[lab].get(m, np.nan) for m in models] for lab in labels], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(models), 0.9 + 0.45 * len(labels)))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(models)):
            if mat[i, j] == mat[i, j]:
                ax.text(j, i, f"{100 * mat[i, j]:.0f}%", ha="center", va="center",
                        color="white" if mat[i, j] < 0.6 else "black", fontsize=8)
    ax.set_xlabel("evaluated recognizer")
    ax.set_ylabel("authorized (/ server transform)")
    kappa = "per-model calibrated kappa" if metric.endswith("_cal") else f"kappa={ev.cfg.kappa}"
    ax.set_title(f"{ev.cfg.method}: strict accuracy (Eq. 10, {kappa})")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_sweep(path: Path, ev: Evaluation) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sw = [r for r in ev.records if r["attack"] == "sweep"]
    if not sw:
        return False
    key = sw[0]["params"]["sweep"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for auth in dict.fromkeys(r["authorized"] for r in sw):
        auths = auth.split("+")
        values = sorted({r["params"][key] for r in sw if r["authorized"] == auth}, key=lambda v: (str(type(v)), v))

        def series(pred):
            ys = []
            for v in values:
                sel = [r["value"] for r in sw if r["authorized"] == auth and r["params"][key] == v and pred(r)]
                ys.append(sum(sel) / len(sel) if sel else float("nan"))
            return ys

        xs = list(range(len(values))) if any(isinstance(v, str) for v in values) else values
        m = "strict_accuracy_cal" if any(r["metric"] == "strict_accuracy_cal" for r in sw) else "strict_accuracy"
        ax.plot(xs, series(lambda r: r["metric"] == m and r["evaluated_model"] in auths), "o-",
                label=f"authorized {m} ({auth})")
        ax.plot(xs, series(lambda r: r["metric"] == m and r["evaluated_model"] == "mean-unauthorized"),
                "s--", label=f"mean unauthorized {m}")
        ax.plot(xs, series(lambda r: r["metric"] == "top1" and r["evaluated_model"] in auths), "d-.",
                label="authorized top-1")
        ax.plot(xs, series(lambda r: r["metric"] == "ssim" and r["role"] == "image"), "^:",
                label="SSIM(original, protected)")
        if xs != values:
            ax.set_xticks(xs, [str(v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel("value")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{ev.cfg.method}: privacy / utility along {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(out_dir: Path, ev: Evaluation) -> None:
    """results.json (the record list), config.json, results.md and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(ev.records, indent=1) + "\n")
    conf = _jsonable(dataclasses.asdict(ev.cfg))
    (out_dir / "config.json").write_text(json.dumps({"config": conf, "timings_s": ev.timings, **ev.extras},
                                                    indent=2) + "\n")
    plots = []
    if plot_heatmap(out_dir / "abuse-heatmap.png", ev):
        plots.append("abuse-heatmap.png")
    if plot_heatmap(out_dir / "abuse-heatmap-calibrated.png", ev, "strict_accuracy_cal"):
        plots.append("abuse-heatmap-calibrated.png")
    if plot_sweep(out_dir / "sweep.png", ev):
        plots.append("sweep.png")
    md = markdown(ev)
    if plots:
        md += "\n## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    (out_dir / "results.md").write_text(md)


def run_evaluation(cfg: EvalConfig, out_dir: str | Path | None = None,
                   models: dict[str, nn.Module] | None = None) -> list[dict]:
    """Convenience: ``Evaluation(cfg, models).run(out_dir)``."""
    return Evaluation(cfg, models).run(Path(out_dir) if out_dir is not None else None)


def parse_sweep(text: str, method: str) -> tuple[str, tuple]:
    """``"steps=25,50,100"`` -> ``("steps", (25, 50, 100))``, values typed like the Config field."""
    if "=" not in text:
        raise InvalidInput(f"--sweep must look like KEY=V1,V2,... (e.g. steps=25,50,100), got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if method == "none":
        raise InvalidInput("--sweep needs a protection method (pmt or fmd), not none")
    from photoveil.client.protect import get_protector

    fields = {f.name: f for f in dataclasses.fields(get_protector(method).Config)}
    skip = {"seed", "batch_size", "progress", "device", "layers"}
    allowed = sorted(k for k in fields if k not in skip)
    if key not in fields or key in skip:
        raise InvalidInput(f"cannot sweep {key!r} for {method}; accepted: {', '.join(allowed)}")
    default = getattr(get_protector(method).Config(), key)
    values = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            if isinstance(default, bool):
                raise ValueError
            values.append(int(item) if isinstance(default, int) else float(item) if isinstance(default, float) else item)
        except ValueError:
            raise InvalidInput(f"--sweep {key}: {item!r} is not a valid {type(default).__name__}") from None
    if len(values) < 2:
        raise InvalidInput(f"--sweep {key} needs at least two values, got {raw!r}")
    return key, tuple(values)


def records_by(records: list[dict], **match) -> list[dict]:
    """Records whose fields equal every ``match`` item (handy in tests and notebooks)."""
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


__all__ = ["EvalConfig", "Evaluation", "run_evaluation", "parse_sweep", "records_by", "select_data",
           "FaceCache", "build_protector", "split_of", "ATTACKS", "METHODS"]
