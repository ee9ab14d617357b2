"""What every adaptive attacker of ``--attacks adaptive`` shares (issue 19).

An adaptive attacker holds what every phone holds — the published protection artifact — and
its own labelled faces (*attacker data*). It trains something with them and is then scored
on the run's protected uploads of the *evaluated* identities. This module gives the
attackers:

* :func:`attacker_data` — the attacker's identities and images: identities of the data folder
  that are **not** evaluated (checked by :func:`assert_disjoint`, which raises, so the check
  survives ``python -O``), a held-out part of them for the attacker's own threshold
  calibration and clean validation, and the seeded budget prefixes (500 / 2000 / all images:
  whole identities are added until the budget is reached);
* :class:`Budget` — images, identities, epochs, wall time and the machine's load, written into
  every record;
* :func:`score` — identification top-1 of protected queries against a clean gallery and
  verification accuracy of (protected x1, clean x2) pairs at the attacker's calibrated
  threshold, each with ``n`` and a 95 % Wilson interval, protected and clean;
* :func:`protected_attacker_set` — the attacker's own faces run through the public protector
  (cached on disk: protecting is the expensive part of the robust-training and purifier
  attackers);
* :class:`AdaptiveAttacker` — the small base each attacker module implements.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks.purifier import wilson

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


class DisjointnessError(ValueError):
    """Attacker data share identities (or images) with the evaluated identities."""


def assert_disjoint(attacker: Sequence[str], evaluated: Sequence[str], what: str = "identities") -> None:
    """Raise :class:`DisjointnessError` when ``attacker`` and ``evaluated`` share an item."""
    shared = sorted(set(map(str, attacker)) & set(map(str, evaluated)))
    if shared:
        raise DisjointnessError(f"attacker {what} overlap the evaluated {what}: {', '.join(shared[:5])}"
                                f"{' ...' if len(shared) > 5 else ''} ({len(shared)} shared)")


@dataclass
class AttackerData:
    """The attacker's labelled faces at one budget."""

    paths: list[Path]
    labels: list[int]                     # 0..identities-1, by ``identities``
    identities: list[str]
    calib_pairs: list = field(default_factory=list)     # clean pairs of held-out attacker identities
    calib_identities: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.paths)


@dataclass
class AttackerPool:
    """Every attacker identity in budget order, plus the held-out calibration identities."""

    images: dict[str, tuple[Path, ...]]   # training identities (in ``order``)
    order: list[str]
    calib_pairs: list
    calib_identities: list[str]

    @property
    def total_images(self) -> int:
        return sum(len(self.images[n]) for n in self.order)

    def budget(self, n_images: int, min_images: int = 2) -> AttackerData:
        """Whole identities (with >= ``min_images`` images) in order until ``n_images`` images
        (``n_images`` 0: all of them)."""
        paths, labels, names = [], [], []
        for name in self.order:
            imgs = self.images[name]
            if len(imgs) < min_images:
                continue
            if n_images and len(paths) >= n_images:
                break
            names.append(name)
            paths += list(imgs)
            labels += [len(names) - 1] * len(imgs)
        return AttackerData(paths, labels, names, self.calib_pairs, self.calib_identities)


def attacker_data(folder, evaluated: Sequence[str], seed: int = 0, calib_identities: int = 60,
                  calib_pairs: int = 400, min_images: int = 2) -> AttackerPool:
    """The attacker's identities of ``folder`` (an :class:`~photoveil.data.faces.IdentityFolder`):
    every identity with >= ``min_images`` images that is not in ``evaluated``, in a seeded
    order; the first ``calib_identities`` of them are held out for the attacker's threshold
    calibration and clean validation (``calib_pairs`` pairs, half same)."""
    from photoveil.data.faces import generate_pairs

    evaluated = set(evaluated)
    names = [n for n in folder.identities if n not in evaluated and len(folder.images[n]) >= min_images]
    assert_disjoint(names, evaluated)
    rng = random.Random(f"adaptive-attacker-{seed}")
    rng.shuffle(names)
    k = min(calib_identities, max(2, len(names) // 4))
    held, train = names[:k], names[k:]
    calib = []
    if len(held) >= 2:
        pool = folder.subset(held)
        pool = type(pool)(pool.root, {n: v[:6] for n, v in pool.images.items()})
        n_same = min(calib_pairs // 2, sum(len(v) * (len(v) - 1) // 2 for v in pool.images.values()))
        tot = len(pool)
        n_diff = min(calib_pairs - n_same, (tot * tot - sum(len(v) ** 2 for v in pool.images.values())) // 2)
        calib = generate_pairs(pool, n_same, n_diff, seed=seed + 7)
    out = AttackerPool({n: tuple(folder.images[n]) for n in train}, train, calib, held)
    assert_disjoint(list(out.images) + held, evaluated)
    return out


def evaluated_identities(ctx: RunContext) -> list[str]:
    """The run's evaluated (test) identities; pairs and queries are drawn among them."""
    return sorted(ctx.data.test)


@dataclass
class Budget:
    """What the attacker spent (``attacker_*`` record fields)."""

    images: int
    identities: int
    epochs: int
    wall_s: float = 0.0
    protected_images: int = 0   # of its own images run through the public protector
    load_1m: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))

    def fields(self) -> dict[str, Any]:
        return {"attacker_images": self.images, "attacker_identities": self.identities,
                "attacker_epochs": self.epochs, "attacker_wall_s": round(self.wall_s, 1),
                "attacker_protected_images": self.protected_images, "load_1m": self.load_1m}


def calibrate_threshold(embed_fn: Callable[[list[Path]], dict[str, torch.Tensor]], pairs) -> tuple[float, float]:
    """(threshold maximising clean verification accuracy on ``pairs``, that accuracy)."""
    from photoveil.evaluation.lfw import best_threshold

    if not pairs:
        return 0.5, float("nan")
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    emb = embed_fn(paths)
    a = torch.stack([emb[str(p.path_a)] for p in pairs])
    b = torch.stack([emb[str(p.path_b)] for p in pairs])
    scores = M.cosine(a, b).double().numpy()
    same = torch.tensor([p.same for p in pairs]).numpy()
    thr = best_threshold(scores, same)
    return float(thr), float(((scores > thr) == same).mean())


def score(ctx: RunContext, clean: dict[str, torch.Tensor], protected: dict[str, torch.Tensor],
          threshold: float) -> dict[str, tuple[float, int]]:
    """``{metric: (value, n)}`` of one attacker embedding.

    ``clean``: path -> embedding of the clean image (every test image); ``protected``:
    path -> embedding of the protected upload (``data.protected_paths``). Identification:
    protected queries against the clean gallery (``top1``; ``clean_top1`` with clean
    queries); verification: cos(protected x1, clean x2) > ``threshold`` against the pair's
    label (``verification_accuracy_cal``; ``clean_`` with clean x1).
    """
    data = ctx.data
    ge = torch.stack([clean[str(p)] for p in data.gallery])
    gl, ql = torch.tensor(data.gallery_labels), torch.tensor(data.query_labels)
    out = {}
    for prefix, q in (("", protected), ("clean_", clean)):
        qe = torch.stack([q[str(p)] for p in data.queries])
        out[f"{prefix}top1"] = (M.identification_top1(ge, gl, qe, ql), len(data.queries))
        a = torch.stack([q[str(p.path_a)] for p in data.pairs])
        b = torch.stack([clean[str(p.path_b)] for p in data.pairs])
        same = torch.tensor([p.same for p in data.pairs])
        acc = ((M.cosine(a, b) > threshold) == same).float().mean().item()
        out[f"{prefix}verification_accuracy_cal"] = (acc, len(data.pairs))
    return out


def records(ctx: RunContext, attacker: str, evaluated_model: str, scores: dict[str, tuple[float, int]],
            spent: Budget, threshold: float | None = None, upload_mode: str = "image",
            role: str = "unauthorized", **extra) -> list[dict]:
    """Result records (``attack`` ``adaptive``) with the attacker, its budget and 95 % intervals."""
    prot = ctx.protection
    out = []
    for metric, (value, n) in scores.items():
        lo, hi = wilson(value, n)
        out.append(ctx.record(authorized=prot.authorized, evaluated_model=evaluated_model, metric=metric,
                              value=value, attack="adaptive", params=prot.params, role=role, n=n,
                              ci_low=round(lo, 4), ci_high=round(hi, 4), attacker=attacker,
                              preset=ctx.cfg.preset, upload_mode=upload_mode, kappa=threshold,
                              **spent.fields(), **extra))
    return out


def cache_root(ctx: RunContext) -> Path:
    """Where attacker features, heads and protected attacker images are kept between runs."""
    root = Path(ctx.cfg.adaptive_cache)
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_table(path: Path) -> dict[str, torch.Tensor]:
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a corrupt cache file is rebuilt
            return {}
    return {}


def save_table(path: Path, table: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(table, tmp)
    tmp.replace(path)


def protected_attacker_set(ctx: RunContext, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(clean [N,3,H,W], protected [N,3,H,W], seconds spent protecting now) of the attacker's
    ``paths`` in the run's authorized geometry, protected with the run's (public) protector
    and settings; protected images are cached under the adaptive cache (uint8)."""
    prot = ctx.protection
    clean = ctx.faces.get(list(paths), prot.size, model=prot.setting[0])
    key = digest(ctx.cfg.method, prot.setting, prot.params, prot.size, ctx.cfg.alignment)
    file = cache_root(ctx) / f"protected-{ctx.cfg.method}-{key}.pt"
    table = load_table(file)
    missing = [i for i, p in enumerate(paths) if str(p) not in table]
    spent = 0.0
    if missing:
        t0 = time.perf_counter()
        chunk = 16
        for s in range(0, len(missing), chunk):
            idx = missing[s:s + chunk]
            out = prot.protector.protect(clean[idx])
            for i, img in zip(idx, out):
                table[str(paths[i])] = (img.clamp(0, 1) * 255.0).round().to(torch.uint8)
            save_table(file, table)   # a long protection leaves usable partial results
        spent = time.perf_counter() - t0
    protected = torch.stack([table[str(p)] for p in paths]).float() / 255.0
    return clean, protected, spent


def quantize(images: torch.Tensor) -> torch.Tensor:
    """What an image upload carries: 8-bit pixels (PNG)."""
    return (images.clamp(0, 1) * 255.0).round() / 255.0


class AdaptiveAttacker:
    """One adaptive attacker: ``run(ctx)`` trains on attacker data and returns its records.

    Subclasses set ``name`` (the records' ``attacker``; ``purifier-*`` for purifiers) and
    ``methods`` (the protection methods it applies to)."""

    name: str = ""
    methods: tuple[str, ...] = ("pmt", "fmd", "generator", "none")

    def applies(self, ctx: RunContext) -> bool:
        return ctx.cfg.method in self.methods

    def run(self, ctx: RunContext) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError


def pool_for(ctx: RunContext) -> AttackerPool:
    """The run's attacker pool (identities disjoint from the evaluated ones, asserted)."""
    from photoveil.data.faces import scan_identity_folder
    from photoveil.paths import default_lfw_dir

    folder = scan_identity_folder(ctx.cfg.data or default_lfw_dir())
    pool = attacker_data(folder, evaluated_identities(ctx), seed=ctx.cfg.seed,
                         calib_identities=ctx.cfg.adaptive_calib_identities)
    test_paths = {str(p) for p in ctx.data.all_paths}
    assert_disjoint([str(p) for n in pool.order for p in pool.images[n]], test_paths, "images")
    return pool


__all__ = ["AdaptiveAttacker", "AttackerData", "AttackerPool", "Budget", "DisjointnessError", "assert_disjoint",
           "attacker_data", "cache_root", "calibrate_threshold", "digest", "evaluated_identities", "load_table",
           "pool_for", "protected_attacker_set", "quantize", "records", "save_table", "score"]
