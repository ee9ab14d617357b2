"""The paper's target x auxiliary evaluation (Ye et al., MMSys'22, Sec. 4.2, Fig. 7-8, Table 2).

For every ordered pair (target, aux) of distinct archs one generator is trained and tested
on the held-out half of the test split: protected target accuracy, protected aux accuracy,
clean target accuracy and mean |SSIM(x, x')|; plus one no-aux generator per target
(the paper's "no auxiliary" baseline, aux = None). Each pair is a run folder
``out/<target>__<aux|noaux>`` (see :mod:`.train`); a pair whose ``result.json`` exists is
skipped and a half-trained one resumes from its ``last.ckpt``, so the matrix is resumable.

Outputs in ``out``: ``matrix.json`` (records), ``heatmap_<metric>.png`` per metric, and
``summary`` figures against the issue's targets.

Example::

    >>> records = run_matrix(["resnet18", "vgg13_bn", "mobilenet_v2"], "runs/matrix",
    ...                      base=GeneratorTrainConfig(width=0.25, epochs=2, subset=10000))
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from photoveil.generator_training.config import GeneratorTrainConfig

RECORD_KEYS = ("target", "aux", "target_accuracy", "aux_accuracy", "clean_target_accuracy",
               "clean_aux_accuracy", "ssim", "n_images", "train_images_per_second", "best_epoch")
HEATMAP_METRICS = ("target_accuracy", "aux_accuracy", "ssim")


def pairs(archs: list[str], baseline: bool = True) -> list[tuple[str, str | None]]:
    """Ordered (target, aux) pairs, each target's no-aux baseline first."""
    out: list[tuple[str, str | None]] = []
    for t in archs:
        if baseline:
            out.append((t, None))
        out += [(t, a) for a in archs if a != t]
    return out


def run_matrix(archs: list[str], out_dir, base: GeneratorTrainConfig, *, baseline: bool = True,
               accelerator: str = "auto", devices="auto", strategy: str = "auto",
               progress: bool = True, train_kwargs: dict | None = None) -> list[dict]:
    """Train/evaluate every pair (skipping finished ones); write matrix.json and heatmaps."""
    from tqdm.auto import tqdm

    from photoveil.generator_training.train import train

    if len(archs) < 2 or len(set(archs)) != len(archs):
        raise ValueError(f"archs must name >= 2 distinct models, got {archs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(pairs(archs, baseline), desc="matrix", unit="pair", disable=not progress)
    for target, aux in bar:
        bar.set_postfix_str(f"{target} vs {aux or 'no aux'}")
        cfg = dataclasses.replace(base, target=target, aux=aux)
        run_dir = out / cfg.run_name
        done = run_dir / "result.json"
        if done.exists():
            result = json.loads(done.read_text())
        else:
            result = train(cfg, run_dir, accelerator=accelerator, devices=devices, strategy=strategy,
                           progress=False, **(train_kwargs or {})).metrics
        records.append({k: result.get(k) for k in RECORD_KEYS})
        (out / "matrix.json").write_text(json.dumps({"config": base.to_dict(), "records": records}, indent=2))
    (out / "matrix.json").write_text(json.dumps(
        {"config": base.to_dict(), "records": records, "summary": summary(records)}, indent=2))
    heatmaps(records, archs, out)
    return records


def summary(records: list[dict], max_drop: float = 0.05, max_aux: float = 0.15) -> dict:
    """Figures against the issue's targets over the with-aux pairs."""
    with_aux = [r for r in records if r["aux"] is not None]
    if not with_aux:
        return {"pairs": 0}
    n = len(with_aux)
    kept = sum(r["clean_target_accuracy"] - r["target_accuracy"] <= max_drop for r in with_aux)
    return {
        "pairs": n,
        "target_within_5_points": f"{kept}/{n}",
        "target_within_5_points_fraction": kept / n,
        "aux_accuracy_le_15pct": f"{sum(r['aux_accuracy'] <= max_aux for r in with_aux)}/{n}",
        "mean_aux_accuracy": sum(r["aux_accuracy"] for r in with_aux) / n,
        "mean_ssim": sum(r["ssim"] for r in with_aux) / n,
        "mean_target_drop": sum(r["clean_target_accuracy"] - r["target_accuracy"] for r in with_aux) / n,
    }


def heatmaps(records: list[dict], archs: list[str], out_dir) -> list[Path]:
    """One PNG per metric: rows = target, columns = aux (+ "none" = no-aux baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = list(archs) + ["none"]
    paths = []
    for metric in HEATMAP_METRICS:
        grid = np.full((len(archs), len(cols)), np.nan)
        for r in records:
            if r["target"] in archs and r.get(metric) is not None:
                grid[archs.index(r["target"]), cols.index(r["aux"] or "none")] = r[metric]
        fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2, 0.8 * len(archs) + 1.5))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(archs)), archs)
        ax.set_xlabel("auxiliary model")
        ax.set_ylabel("target model")
        ax.set_title(metric.replace("_", " ") + (" (|SSIM|)" if metric == "ssim" else ""))
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                            color="white" if grid[i, j] < 0.5 else "black", fontsize=8)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = Path(out_dir) / f"heatmap_{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
