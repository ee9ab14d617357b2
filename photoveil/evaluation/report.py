"""The run's files: ``results.json`` (the records), ``config.json`` (config, timings, data
sizes), ``results.md`` (one table per attack), the heatmap / sweep plots and the example
and reconstruction image grids."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from photoveil.evaluation.config import EvalConfig


def jsonable(d: dict) -> dict:
    """``d`` with tuples / sets as lists and other non-JSON values as strings."""
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def _to_uint8_grid(rows: list[torch.Tensor]):
    import numpy as np

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_examples(path: Path, originals: torch.Tensor, protected: torch.Tensor, names: list[str] | None = None,
                  title: str = "") -> None:
    """PNG: originals (top row) and their protected uploads (bottom row), labelled: rows
    named, each column titled with its person's ``names`` entry, ``title`` above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    if n == 0:
        return
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.8, 3.9), squeeze=False)
    for j in range(n):
        for i, (row, label) in enumerate(((originals, "original"), (protected, "uploaded"))):
            ax = axes[i][j]
            ax.imshow(row[j].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
        if names:
            axes[0][j].set_title(names[j][:18], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def markdown(cfg: EvalConfig, recs: list[dict], timings: dict[str, float], extras: dict[str, Any]) -> str:
    """``results.md``: one table per attack, then the timings."""
    out = [f"# photoveil evaluate — method {cfg.method}, authorized {', '.join(cfg.authorized)}", ""]
    out += [f"Data: {json.dumps(extras.get('data', {}))}; kappa = {cfg.kappa}; seed {cfg.seed}; "
            f"wall time {timings.get('total_s', 0):.0f} s.", ""]
    if any(r["attack"] == "abuse" for r in recs):
        from photoveil.evaluation.plain import plain_markdown

        out += [plain_markdown(cfg, recs, extras, extras.get("examples", []))]

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
    ada = [r for r in recs if r["attack"] == "adaptive"]
    if ada:
        rows = []
        for r in ada:
            if r["role"] == "aggregate":
                continue
            ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None else "-"
            rows.append([r["authorized"], r.get("preset"), r.get("upload_mode"), r["attacker"], r.get("stage", ""),
                         r.get("attacker_images"), r.get("attacker_identities"), r.get("attacker_epochs"),
                         r.get("attacker_wall_s"), r["evaluated_model"], r["metric"], r["value"], ci, r["n"]])
        out += ["## Adaptive attackers (hold the published artifact; trained on non-evaluated identities)", "",
                _table(["authorized", "preset", "upload", "attacker", "stage", "images", "identities", "epochs",
                        "wall s", "evaluated_model", "metric", "value", "95% CI", "n"], rows), ""]
    img = [r for r in recs if r["attack"] == "image"]
    if img:
        out += ["## Image metrics (original vs protected)", "",
                _table(["authorized", "metric", "value"], [[r["authorized"], r["metric"], r["value"]] for r in img]),
                "", "UP(sigma, kappa): utility = I(cos > kappa) on the authorized model; privacy = 1 - SSIM "
                "(substitute for LPIPS, whose weights cannot be fetched offline).", ""]
    from photoveil.evaluation.readability import summary_rows

    readable = summary_rows(recs)
    if readable:
        out += ["## Readability witness (after per-channel standardisation, 3x3 median, grayscale, half size)", "",
                _table(["authorized", "evaluated", "metric", "value", "95 % CI", "n"], readable), "",
                "readable_ssim / readable_edge: |SSIM| and Sobel edge-map correlation of the normalised original "
                "and protected images (noise ~0.05 / ~0, a colour cast + fine lines ~0.9; readable_ssim_far: the "
                "quarter-size view, noise ~0.1, another face ~0.3; readable_ssim_blur / readable_edge_blur: the "
                "out-of-focus view, the blurred luminance as seen, noise ~0.08, another face ~0.37); "
                "readable_top1: a recognizer on the normalised protected image (readable_clean_top1: on the "
                "normalised clean image; readable_blur_*: on the out-of-focus view; readable_chance: 1 / "
                "identities).", ""]
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
    out += ["## Timings (s)", "", _table(["stage", "seconds"], [[k, v] for k, v in timings.items()]), ""]
    return "\n".join(out)


def plot_heatmap(path: Path, cfg: EvalConfig, records: list[dict], metric: str = "strict_accuracy") -> bool:
    """PNG: ``metric`` of the abuse / robustness records as an authorized x evaluated heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    recs = [r for r in records if r["attack"] in ("abuse", "robustness")
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
            label = f"{cfg.method}: {r['authorized']}" + ("" if r["transform"] == "none" else f" / {r['transform']}")
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
    kappa = "per-model calibrated kappa" if metric.endswith("_cal") else f"kappa={cfg.kappa}"
    ax.set_title(f"{cfg.method}: strict accuracy (Eq. 10, {kappa})")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_sweep(path: Path, cfg: EvalConfig, records: list[dict]) -> bool:
    """PNG: the sweep records along the swept hyper-parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sw = [r for r in records if r["attack"] == "sweep"]
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
    ax.set_title(f"{cfg.method}: privacy / utility along {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_adaptive(path: Path, records: list[dict]) -> bool:
    """PNG: adaptive attackers' top-1 on protected uploads against attacker images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in records if r["attack"] == "adaptive" and r["metric"] == "top1" and r["role"] != "aggregate"
           and r.get("attacker") not in (None, "none")]
    if not sel:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in dict.fromkeys((r["attacker"], r["evaluated_model"], r.get("upload_mode")) for r in sel):
        pts = sorted((r["attacker_images"], r["value"], r.get("ci_low"), r.get("ci_high")) for r in sel
                     if (r["attacker"], r["evaluated_model"], r.get("upload_mode")) == key)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[max(0.0, y - (p[2] if p[2] is not None else y)) for y, p in zip(ys, pts)],
               [max(0.0, (p[3] if p[3] is not None else y) - y) for y, p in zip(ys, pts)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=" / ".join(str(k) for k in key))
    ax.axhline(0.2, color="grey", ls=":", lw=1, label="goal: top-1 <= 0.2")
    ax.set_xlabel("attacker images (0: off the shelf)")
    ax.set_ylabel("top-1 on protected uploads")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(out_dir: Path, cfg: EvalConfig, records: list[dict], timings: dict[str, float],
                  extras: dict[str, Any]) -> None:
    """results.json (the record list), config.json, results.md and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    conf = jsonable(dataclasses.asdict(cfg))
    (out_dir / "config.json").write_text(json.dumps({"config": conf, "timings_s": timings, **extras},
                                                    indent=2) + "\n")
    plots = []
    if plot_heatmap(out_dir / "abuse-heatmap.png", cfg, records):
        plots.append("abuse-heatmap.png")
    if plot_heatmap(out_dir / "abuse-heatmap-calibrated.png", cfg, records, "strict_accuracy_cal"):
        plots.append("abuse-heatmap-calibrated.png")
    if plot_sweep(out_dir / "sweep.png", cfg, records):
        plots.append("sweep.png")
    md = markdown(cfg, records, timings, extras)
    if plots:
        md += "\n## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    (out_dir / "results.md").write_text(md)


__all__ = ["jsonable", "markdown", "plot_adaptive", "plot_heatmap", "plot_sweep", "save_examples", "save_recon_grid",
           "write_outputs"]
