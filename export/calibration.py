"""Calibration inputs for int8 (PT2E) export: a folder of images, else the shipped faces
topped up with seeded noise."""
from __future__ import annotations

from pathlib import Path

from photoveil.errors import InvalidInput


def calibration_batches(folder, shape, n: int = 16):
    """Calibration batches: images of ``folder`` (resized), else shipped faces + noise."""
    import torch
    import torch.nn.functional as F

    from photoveil.paths import ASSETS

    _, c, h, w = shape
    root = Path(folder) if folder else ASSETS / "faces"
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if folder and not files:
        raise InvalidInput(f"no .jpg/.png images under {folder} for calibration")
    batches = []
    if files:
        from PIL import Image

        for p in files:
            img = Image.open(p).convert("RGB" if c == 3 else "L")
            t = torch.from_numpy(__import__("numpy").asarray(img, dtype="float32") / 255.0)
            t = t.permute(2, 0, 1) if t.dim() == 3 else t[None]
            batches.append((F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
                            .expand(shape[0], -1, -1, -1).contiguous(),))
    gen = torch.Generator().manual_seed(0)
    while len(batches) < n:
        batches.append((torch.rand(shape, generator=gen),))
    return batches


def quantize_int8(prog, folder=None):
    """``prog`` (an :class:`~photoveil.export.programs.Program`) set to lower as PT2E int8,
    calibrated on :func:`calibration_batches` of ``folder`` at its input shape."""
    prog.options.quantize = "int8"
    prog.options.calibration = calibration_batches(folder, tuple(prog.inputs[0].shape))
    prog.options.__post_init__()  # re-validate: int8 needs calibration inputs
    return prog
