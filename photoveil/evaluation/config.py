"""The configuration of one evaluation run and the parsing of ``--sweep``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from photoveil.errors import InvalidInput
from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks import ATTACKS

METHODS = ("pmt", "fmd", "generator", "none")
FACE_SOURCES = ("auto", "photos", "frames")


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
    faces: str = "auto"                          # photos | frames | auto (see uses_photos)
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
        if self.faces not in FACE_SOURCES:
            raise InvalidInput(f"faces must be one of {', '.join(FACE_SOURCES)}, got {self.faces!r}")
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

    @property
    def uses_photos(self) -> bool:
        """Whether faces are found as ``protect`` finds them in full photos
        (:mod:`photoveil.evaluation.photos`) rather than taken from pre-cropped LFW-style
        frames: ``faces = photos``, or ``auto`` with a ``--data`` folder that is not in the
        LFW layout (no ``pairs.txt``), in both cases with landmark alignment."""
        if self.alignment != "landmarks" or self.faces == "frames":
            return False
        if self.faces == "photos":
            return True
        from pathlib import Path

        return self.data is not None and not (Path(self.data).expanduser() / "pairs.txt").is_file()

    def settings(self) -> list[tuple[str, ...]]:
        """The authorized settings protected in turn: one per model with ``separately``,
        else all authorized models together (MR-PMT)."""
        if self.separately:
            return [(a,) for a in self.authorized]
        return [tuple(self.authorized)]


def parse_sweep(text: str, method: str) -> tuple[str, tuple]:
    """``"steps=25,50,100"`` -> ``("steps", (25, 50, 100))``, values typed like the Config field."""
    if "=" not in text:
        raise InvalidInput(f"--sweep must look like KEY=V1,V2,... (e.g. steps=25,50,100), got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if method == "none":
        raise InvalidInput("--sweep needs a protection method (pmt or fmd), not none")
    from photoveil.client.protect import get_protector
    from photoveil.client.protect.base import PRESET_NAMES

    if key == "preset":  # presets side by side on the same draw (e.g. a new one vs its ablation)
        cls = get_protector(method)
        known = (*PRESET_NAMES, *cls.ABLATION_PRESETS)
        values = tuple(v.strip() for v in raw.split(",") if v.strip())
        bad = [v for v in values if v not in known]
        if bad or len(values) < 2:
            raise InvalidInput(f"--sweep preset needs at least two of {', '.join(known)}; got {raw!r}")
        return key, values
    fields = {f.name: f for f in dataclasses.fields(get_protector(method).Config)}
    skip = {"seed", "batch_size", "progress", "device", "layers"}
    allowed = sorted(k for k in fields if k not in skip)
    if key not in fields or key in skip:
        raise InvalidInput(f"cannot sweep {key!r} for {method}; accepted: preset, {', '.join(allowed)}")
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


__all__ = ["ATTACKS", "METHODS", "EvalConfig", "parse_sweep"]
