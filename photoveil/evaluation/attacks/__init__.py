"""The attacks an evaluation run measures a protector with, by name.

An attack is a module of this package with a function ``run(ctx) -> list[dict]``: it gets
the run's :class:`~photoveil.evaluation.context.RunContext` (config, data, models, clean
embeddings and the current authorized setting's protected images) and returns its result
records (made with ``ctx.record(...)``). Adding an attack is one new module here plus one
line in :data:`REGISTRY`; ``--attacks`` and :class:`~photoveil.evaluation.config.EvalConfig`
accept every registered name.

* ``abuse`` (:mod:`.abuse`) — data abuse by recognizers;
* ``robustness`` (:mod:`.robustness`) — the abuse metrics after server-side transforms;
* ``attributes`` (:mod:`.attributes`) — attribute estimation;
* ``linkage`` (:mod:`.linkage`) — identification against a gallery of protected photos (the
  provider enrolling uploads; an attacker holding one labelled upload per person);
* ``reconstruction`` (:mod:`.reconstruction`) — Level 1 / Level 2 reconstruction of the face;
* ``purifier`` (:mod:`.purifier`) — cheap purifiers (median, bilateral, JPEG 50 + upscale) before every recognizer;
* ``adaptive`` (:mod:`.adaptive`) — attackers holding the published artifact: the recognizer the
  artifact carries (FMD), a back half trained on the public shallow model, robust training on
  self-protected faces, a trained purifier
  (:data:`ADAPTIVE_ATTACKERS`, one module each: ``adaptive_*.py``);

plus :mod:`.image` (SSIM, PSNR, UP), which every run measures and is not selectable.

This module imports no attack (nor torch): the CLI lists the names at start-up.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

# The run context (photoveil.evaluation.context.RunContext) is built from the config, which
# imports this registry: attacks take it as ``Any`` here so the arrow points one way.
RunContext = Any

# attack name -> module of this package that defines ``run``; attacks run in this order
REGISTRY: dict[str, str] = {
    "abuse": "abuse",
    "robustness": "robustness",
    "attributes": "attributes",
    "linkage": "linkage",
    "reconstruction": "reconstruction",
    "purifier": "purifier",
    "adaptive": "adaptive",
}
ATTACKS: tuple[str, ...] = tuple(sorted(REGISTRY))  # the accepted names
# the default selection: adaptive attackers train models (minutes to hours): asked for by name
DEFAULT_ATTACKS: tuple[str, ...] = tuple(a for a in ATTACKS if a != "adaptive")
# the attackers of ``adaptive`` (photoveil.evaluation.attacks.adaptive.MODULES), in run order
ADAPTIVE_ATTACKERS: tuple[str, ...] = ("artifact-model", "public-shallow", "robust-training", "purifier-unet")


class Attack(Protocol):
    def __call__(self, ctx: RunContext) -> list[dict]: ...


def get_attack(name: str) -> Callable[[RunContext], list[dict]]:
    """The ``run`` function of attack ``name``."""
    from photoveil.errors import InvalidInput

    if name not in REGISTRY:
        raise InvalidInput(f"unknown attack {name!r}; accepted: {', '.join(ATTACKS)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}").run


def selected(names) -> list[str]:
    """The registered attacks among ``names``, in run order."""
    chosen = set(names)
    return [n for n in REGISTRY if n in chosen]


__all__ = ["ADAPTIVE_ATTACKERS", "ATTACKS", "DEFAULT_ATTACKS", "REGISTRY", "Attack", "get_attack", "selected"]
