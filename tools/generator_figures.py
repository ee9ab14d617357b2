"""Figures of a face generator: examples (old vs new, as uploaded, normalised and out of focus) and training curves.

    python tools/generator_figures.py --new face --old face-v1 --metrics runs/gen-read1/run/logs/version_0/metrics.csv \\
        --out docs/figures

Writes ``generator-examples.png`` (six held-out demo identities: original, each generator's
output, and the same after the readability normalisation of ``photoveil.readability`` and out
of focus, ``readability.BLURRED``) and, with ``--metrics``, ``generator-training.png``
(train/val target cosine, aux cosine, readable SSIM in each view and edge correlation per step
of the Lightning CSV log).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch


def examples(new: str, old: str, out: Path, rows: int = 6) -> Path:
    from photoveil.client.protect.generator import GeneratorProtector
    from photoveil.demo import _faces, contact_sheet

    names, _, _, query = _faces("faceapi-resnet34")
    cols = {"original": query}
    with torch.no_grad():
        for label, ckpt in (("old generator", old), ("new generator", new)):
            cols[label] = GeneratorProtector.from_preset("high", checkpoint=ckpt).protect(query)
    return contact_sheet(out / "generator-examples.png", names, cols, rows=rows, tile=112)


def curves(metrics: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics.open()))
    keys = ("target_cos", "aux_cos", "readable_ssim", "readable_ssim_far", "readable_ssim_blur", "readable_edge",
            "readable_aux_cos", "ssim")
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(int(r["step"]), float(r[f"train/{k}_step"])) for r in rows if r.get(f"train/{k}_step")]
        if pts:
            ax.plot(*zip(*pts), label=f"train {k}")
        val = [(int(r["step"]), float(r[f"val/{k}"])) for r in rows if r.get(f"val/{k}")]
        if val:
            ax.plot(*zip(*val), "o", label=f"val {k}")
    ax.set_xlabel("optimizer step (batch 16)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("face generator fine-tuning with the readability witness")
    fig.tight_layout()
    path = out / "generator-training.png"
    fig.savefig(path, dpi=90)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new", default="face")
    p.add_argument("--old", default="face-v1")
    p.add_argument("--metrics", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    a = p.parse_args()
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    print(examples(a.new, a.old, a.out))
    if a.metrics:
        print(curves(a.metrics, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
