"""The protector an evaluation run measures, built from the run's config.

:func:`build_protector` is the one place the evaluation turns ``(method, preset,
overrides)`` and the authorized networks into a protector.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from photoveil.evaluation.report import jsonable

if TYPE_CHECKING:
    from photoveil.evaluation.config import EvalConfig


class IdentityProtector:
    """``--method none``: the upload is the original image (the no-protection baseline)."""

    method = "none"

    def __init__(self):
        self.config = None

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        return images.clone()


def build_protector(cfg: EvalConfig, nets: list, size: tuple[int, int], gallery: torch.Tensor | None = None,
                    gallery_labels: torch.Tensor | None = None, extra: dict | None = None):
    """The protector of ``cfg.method`` (``cfg.preset`` + ``cfg.overrides`` + ``extra``) for
    the authorized ``nets``, protecting images at ``size``.

    Built by the shared factory (:func:`photoveil.client.protect.factory.build_protector`):
    PMT nets of another input size than ``size`` see the images resized (MR-PMT); FMD
    classifies against ``gallery`` / ``gallery_labels``; ``generator`` with a
    ``checkpoint`` folder runs the exported program (what the phone runs).
    """
    from photoveil.client.protect.factory import build_protector as build

    if cfg.method == "none":
        return IdentityProtector()
    values = {"seed": cfg.seed, "progress": cfg.progress, "batch_size": 16, **cfg.overrides, **(extra or {})}
    if cfg.method == "generator":
        values.pop("progress")
        return build("generator", (), cfg.preset, values)
    fmd_gallery = (gallery, gallery_labels) if cfg.method == "fmd" else None
    return build(cfg.method, nets[:1] if cfg.method == "fmd" else nets, cfg.preset, values, fmd_gallery,
                 size=tuple(size), cache_dir=cfg.cache_dir)


def protector_params(protector) -> dict:
    """The protector's config as the records' ``params`` (JSON values; run-only fields
    such as progress, batch size and device left out)."""
    params = protector.config.to_dict() if protector.config is not None else {}
    return jsonable({k: v for k, v in params.items() if k not in ("progress", "batch_size", "device")})


__all__ = ["IdentityProtector", "build_protector", "protector_params"]
