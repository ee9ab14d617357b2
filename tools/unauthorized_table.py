"""Markdown rows of the README's "Unauthorized recognizers re-align the upload" table from
``photoveil evaluate`` runs (``results.json``), one row per (run, value of the swept key).

    python tools/unauthorized_table.py lam_emb runs/r20-fmd-seed1 runs/r20-fmd-seed2

Per row: seed, queries, authorized top-1 and strict (cal) with clean in brackets, each
unauthorized recognizer's top-1 (clean: its own native crop), their mean, image SSIM, and
the readability witness (readable SSIM at half and quarter size, strongest unauthorized
recognizer on the normalised upload, then readable SSIM and the strongest recognizer in the
out-of-focus view) on the run's main setting, the one the ``readability`` records were measured on.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

UNAUTHORIZED = ("faceres", "mobileface", "mobilefacenet")


def rows(key: str, run: Path) -> list[str]:
    recs = json.loads((run / "results.json").read_text())
    seed = next((r["params"].get("seed") for r in recs if r.get("params")), None)
    auth = next(r["evaluated_model"] for r in recs if r.get("role") == "authorized")
    clean, by_value, witness = {}, defaultdict(dict), {}
    main = None
    for r in recs:
        m, e, value = r["metric"], r["evaluated_model"], (r.get("params") or {}).get(key, "-")
        if r["attack"] == "abuse" and m.startswith("clean_"):
            clean[(m[len("clean_"):], e)] = r["value"]
        if r["attack"] in ("abuse", "sweep", "image"):
            by_value[value][(m, e)] = r["value"]
        if r["attack"] == "readability":
            witness[(m, e)], main = r["value"], value
    n = next(r["n"] for r in recs if r["attack"] == "abuse" and r["metric"] == "top1")
    out = []
    for value, d in by_value.items():
        if ("top1", auth) not in d:
            continue
        def cell(metric, model):
            v, c = d.get((metric, model)), clean.get((metric, model))
            return "-" if v is None else f"{v:.3f}" + ("" if c is None else f" ({c:.3f})")
        unauth = " / ".join(cell("top1", u) for u in UNAUTHORIZED)
        mean = sum(d[("top1", u)] for u in UNAUTHORIZED) / len(UNAUTHORIZED)
        mean_clean = sum(clean[("top1", u)] for u in UNAUTHORIZED) / len(UNAUTHORIZED)
        read = [f"{witness[k]:.3f}" if value == main and k in witness else "-"
                for k in (("readable_ssim", "image"), ("readable_ssim_far", "image"), ("readable_top1", "max-unauthorized"),
                          ("readable_ssim_blur", "image"), ("readable_blur_top1", "max-unauthorized"))]
        out.append(f"| {run.name} | {key}={value} | {seed} | {n} | {cell('top1', auth)} | "
                   f"{cell('strict_accuracy_cal', auth)} | {unauth} | {mean:.3f} ({mean_clean:.3f}) | "
                   f"{d.get(('ssim', auth), float('nan')):.3f} | {' | '.join(read)} |")
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python tools/unauthorized_table.py KEY RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    for run in argv[1:]:
        print("\n".join(rows(argv[0], Path(run))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
