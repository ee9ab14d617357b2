"""Markdown table of PMT presets side by side from ``photoveil evaluate --sweep preset=...``
runs (``results.json``), with n and Wilson 95 % intervals.

    python tools/pmt_table.py runs/pmt21-seed1 runs/pmt21-seed2

One row per (run, preset): authorized strict accuracy (cal) and identification top-1 with
their ratio to clean, each unauthorized recognizer's strict (cal) and top-1, their mean,
and image SSIM. The run's main preset comes from the ``abuse`` records, the swept ones
from the ``sweep`` records (the same identities, pairs and thresholds).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from photoveil.evaluation.metrics import wilson


def fmt(rec: dict | None, ci: bool = True) -> str:
    if rec is None or rec.get("value") is None:
        return "-"
    v, n = rec["value"], rec.get("n", 0)
    if not ci:
        return f"{v:.3f}"
    lo, hi = wilson(v, n)
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"


def rows(run: Path) -> list[str]:
    recs = json.loads((run / "results.json").read_text())
    recs = recs["records"] if isinstance(recs, dict) else recs
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    main = (cfg.get("config") or cfg).get("preset", "main")
    seed = (cfg.get("config") or cfg).get("seed", "?")
    clean = {(r["evaluated_model"], r["metric"]): r for r in recs if r.get("attack") == "abuse"
             and r.get("transform", "none") == "none" and r["metric"].startswith("clean_")}
    groups: dict[str, dict] = {}
    for r in recs:
        if r.get("transform", "none") != "none":
            continue
        if r.get("attack") in ("abuse", "image"):
            key = main
        elif r.get("attack") == "sweep":
            key = r["params"].get("preset", str(r["params"].get(r["params"].get("sweep"))))
        else:
            continue
        groups.setdefault(key, {})[(r["evaluated_model"], r["metric"])] = r
    out = []
    for preset, g in groups.items():
        auth = [m for (m, metric), r in g.items() if r.get("role") == "authorized" and metric == "top1"]
        unauth = sorted({m for (m, metric), r in g.items() if r.get("role") == "unauthorized"})
        a = auth[0] if auth else "?"
        sc, ct = clean.get((a, "clean_strict_accuracy_cal")), clean.get((a, "clean_top1"))
        s, t = g.get((a, "strict_accuracy_cal")), g.get((a, "top1"))
        ratio_s = f"{s['value'] / sc['value']:.3f}" if s and sc and sc["value"] else "-"
        ratio_t = f"{t['value'] / ct['value']:.3f}" if t and ct and ct["value"] else "-"
        un = " / ".join(f"{fmt(g.get((m, 'strict_accuracy_cal')), False)}, {fmt(g.get((m, 'top1')), False)}"
                        for m in unauth)
        worst_t = max((g[(m, "top1")]["value"] for m in unauth if (m, "top1") in g), default=float("nan"))
        mean = g.get(("mean-unauthorized", "strict_accuracy_cal"))
        ssim = g.get((a, "ssim"))
        out.append(f"| {seed} | {preset} | {fmt(s)} (clean {fmt(sc, False)}, {ratio_s}x; n={s['n'] if s else '-'}) | "
                   f"{fmt(t)} (clean {fmt(ct, False)}, {ratio_t}x; n={t['n'] if t else '-'}) | {un} | "
                   f"{fmt(mean, False)} | {worst_t:.3f} | {fmt(ssim, False)} |")
    return out


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv]
    header = ("| seed | preset | authorized strict (cal) [95% CI] | authorized top-1 [95% CI] | "
              "unauthorized strict (cal), top-1 (faceres / mobileface / mobilefacenet) | mean unauthorized strict (cal) | "
              "max unauthorized top-1 | SSIM |")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        for line in rows(run):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
