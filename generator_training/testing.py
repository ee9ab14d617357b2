"""``photoveil generator test``: a trained classification generator on its held-out test
images, eager and (optionally) as an exported ``.pte`` program, side by side.

The images are the test split minus the first ``val_size`` (the ones training validated
on), so the figures match ``generator train``'s. With ``--artifact`` the same images go
through the ExecuTorch program too, and the record says how many points each metric moved:
the check that an int8 program protects as well as the fp32 generator it came from.
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from photoveil.errors import InvalidInput

METRICS = ("target_accuracy", "clean_target_accuracy", "aux_accuracy", "clean_aux_accuracy", "ssim")


class ProgramAsModule(nn.Module):
    """A generator ``.pte`` artifact behind ``nn.Module``'s call (``x -> x'``)."""

    def __init__(self, artifact: str | os.PathLike, verify: bool = True):
        super().__init__()
        from photoveil.client.runtime import PteGenerator

        self.protector = PteGenerator(artifact, verify=verify)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.protector.protect(x)


def run_generator_test(checkpoint: str, artifact: str | os.PathLike | None = None, images: int | None = None,
                   aux: str | None = None, batch_size: int = 256, verify: bool = True,
                   progress: bool = False) -> dict:
    """Figures of ``checkpoint`` (a path or shipped name) on its test images; with
    ``artifact`` also those of the program and ``delta_points`` (program - eager, x100)."""
    from torch.utils.data import DataLoader, Subset

    from photoveil.client.protect.generator import GeneratorProtector
    from photoveil.generator_training.config import GeneratorTrainConfig
    from photoveil.generator_training.datamodule import load_classification_splits
    from photoveil.generator_training.module import evaluate_classification, load_critic
    from photoveil.nets.unet import load_generator

    path = GeneratorProtector._resolve(checkpoint)
    net, meta = load_generator(path)
    stored = meta.get("config") or {}
    if stored.get("task", "classification") != "classification":
        raise InvalidInput(f"{checkpoint!r} is a {stored['task']} generator; `generator test` evaluates "
                           "classification generators (faces: `photoveil evaluate --method generator`)")
    known = {f.name for f in fields(GeneratorTrainConfig)}
    config = GeneratorTrainConfig(**{k: v for k, v in stored.items() if k in known})
    aux_name = aux or config.aux
    target, aux_model = load_critic(config, config.target), (load_critic(config, aux_name) if aux_name else None)
    _, _, test = load_classification_splits(config)
    if images is not None:
        if images < 1:
            raise InvalidInput(f"--images must be >= 1, got {images}")
        test = Subset(test, range(min(images, len(test))))
    loader = DataLoader(test, batch_size=batch_size, shuffle=False)
    record = {"checkpoint": str(path), "dataset": config.dataset, "target": config.target, "aux": aux_name,
              "images": len(test)}
    with torch.inference_mode():
        record["eager"] = evaluate_classification(net, target, aux_model, loader, progress=progress)
    if artifact is not None:
        program = ProgramAsModule(artifact, verify=verify)
        with torch.inference_mode():
            record["pte"] = evaluate_classification(program, target, aux_model, loader, progress=progress)
        record["artifact"] = str(artifact)
        record["quantization"] = program.protector.manifest.quantization
        record["delta_points"] = {k: round(100 * (record["pte"][k] - record["eager"][k]), 2)
                                  for k in METRICS if record["eager"].get(k) is not None}
    return record


def format_record(record: dict) -> str:
    cols = [c for c in ("eager", "pte") if c in record]
    lines = [f"{record['target']} (aux {record['aux'] or 'none'}), {record['images']} test images of {record['dataset']}",
             f"{'metric':24s}" + "".join(f"{c:>10s}" for c in cols) + ("  delta (points)" if "pte" in record else "")]
    for k in METRICS:
        if record["eager"].get(k) is None:
            continue
        row = f"{k:24s}" + "".join(f"{record[c][k]:10.4f}" for c in cols)
        if "pte" in record:
            row += f"  {record['delta_points'][k]:+.2f}"
        lines.append(row)
    return "\n".join(lines)


def main(args) -> int:
    import json

    if args.artifact is not None and not Path(args.artifact).is_dir():
        raise InvalidInput(f"--artifact {args.artifact!r} is not an artifact folder (a .pte and its manifest)")
    record = run_generator_test(args.checkpoint, args.artifact, args.images, args.aux, args.batch_size,
                            verify=not args.no_verify, progress=not args.no_progress)
    print(json.dumps(record, indent=2) if args.json else format_record(record))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return 0
