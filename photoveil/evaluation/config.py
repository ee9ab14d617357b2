"""The configuration of one evaluation run and the parsing of ``--sweep``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from photoveil.errors import InvalidInput
from photoveil.evaluation import metrics as M
from photoveil.evaluation.attacks import ADAPTIVE_ATTACKERS, ATTACKS, DEFAULT_ATTACKS

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
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
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
    # --attacks adaptive (issue 19): attackers holding the published artifact
    adaptive_attackers: tuple[str, ...] = ADAPTIVE_ATTACKERS
    adaptive_budgets: tuple[int, ...] = (500, 2000, 0)    # public-shallow attacker images (0 = all)
    adaptive_epochs: int = 8                               # public-shallow head epochs
    adaptive_head_width: int = 32
    adaptive_calib_identities: int = 60                    # attacker identities held out for its threshold
    adaptive_protect_budgets: tuple[int, ...] = (32, 96)   # robust-training / purifier: own images protected
    adaptive_recognizer: str = "mobileface"                # robust-training: the recognizer fine-tuned
    adaptive_finetune_epochs: int = 4
    adaptive_purifier_epochs: int = 15
    adaptive_artifact: str | None = None                   # signed shallow artifact (default: published here)
    adaptive_public_key: str | None = None
    adaptive_cache: str = "runs/adaptive-cache"
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
        self._check_adaptive()
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

    def _check_adaptive(self) -> None:
        self.adaptive_attackers = tuple(self.adaptive_attackers)
        self.adaptive_budgets = tuple(self.adaptive_budgets)
        self.adaptive_protect_budgets = tuple(self.adaptive_protect_budgets)
        bad = set(self.adaptive_attackers) - set(ADAPTIVE_ATTACKERS)
        if bad or not self.adaptive_attackers:
            raise InvalidInput(f"unknown adaptive attacker(s) {sorted(bad)}; accepted: {', '.join(ADAPTIVE_ATTACKERS)}")
        for name, values, lo in (("adaptive_budgets", self.adaptive_budgets, 0),
                                 ("adaptive_protect_budgets", self.adaptive_protect_budgets, 2)):
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < lo or v > 1_000_000
                                 for v in values):
                raise InvalidInput(f"{name} must be a non-empty list of ints in [{lo}, 1000000] (0 = all), "
                                   f"got {values!r}")
        for name, value, lo, hi in (("adaptive_epochs", self.adaptive_epochs, 1, 1000),
                                    ("adaptive_head_width", self.adaptive_head_width, 4, 512),
                                    ("adaptive_calib_identities", self.adaptive_calib_identities, 2, 100000),
                                    ("adaptive_finetune_epochs", self.adaptive_finetune_epochs, 1, 1000),
                                    ("adaptive_purifier_epochs", self.adaptive_purifier_epochs, 1, 1000)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise InvalidInput(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
        if bool(self.adaptive_artifact) != bool(self.adaptive_public_key):
            raise InvalidInput("--adaptive-artifact and --adaptive-public-key go together (the attacker loads the "
                               "signed artifact and verifies it with the provider's public key)")
        if self.adaptive_artifact:
            from pathlib import Path

            for what, path in (("adaptive_artifact", self.adaptive_artifact),
                               ("adaptive_public_key", self.adaptive_public_key)):
                if not Path(path).exists():
                    raise InvalidInput(f"{what} {path!r} does not exist")

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
