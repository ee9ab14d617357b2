"""Markdown rows of the README's "Unauthorized recognizers re-align the upload" table from
``photoveil evaluate`` runs (``results.json``), one row per (run, value of the swept key).

    python tools/unauthorized_table.py lam_emb runs/r20-fmd-seed1 runs/r20-fmd-seed2
    python tools/unauthorized_table.py --pooled runs/ev2-h1-s5 runs/ev2-h1-s6 ...
    python tools/unauthorized_table.py --linkage runs/ev-lg-s5 runs/ev-lg-s6 ...

Per row: seed, queries, authorized top-1 and strict (cal) with clean in brackets, each
unauthorized recognizer's top-1 (clean: its own native crop; ``faceres-deep``, the held-out one,
last), their mean over those the run evaluated, image SSIM, and
the readability witness (readable SSIM at half and quarter size, strongest unauthorized
recognizer on the normalised upload, then readable SSIM and the strongest recognizer in the
out-of-focus view) on the run's main setting, the one the ``readability`` records were measured on.

``--pooled`` sums several runs (seeded draws of one protector) into one row: authorized top-1
minus clean in points per draw, and pooled as correct / queries; the range over the draws of
the readable SSIM, of the strongest unauthorized recognizer in the median view, of the
out-of-focus SSIM, of the strongest one out of focus, of mean unauthorized top-1 and of the
held-out recognizer's top-1 (``faceres-deep``, "-" for runs made before it was evaluated); and on how
many draws each of the two strongest-recognizer counts is within chance: a one-sided exact
binomial test against 1 / identities, Bonferroni-corrected over the recognizers it was the
strongest of, p > 0.05.

``--linkage`` gives one row over draws run with ``--attacks ...,linkage``: see :func:`linkage`.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

UNAUTHORIZED = ("faceres", "mobileface", "mobilefacenet", "faceres-deep")
HELD_OUT = "faceres-deep"  # the recognizer no method, preset or generator was tuned against


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
        present = [u for u in UNAUTHORIZED if ("top1", u) in d]  # faceres-deep since stop 43
        unauth = " / ".join(cell("top1", u) for u in UNAUTHORIZED)
        mean = sum(d[("top1", u)] for u in present) / len(present)
        mean_clean = sum(clean[("top1", u)] for u in present) / len(present)
        read = [f"{witness[k]:.3f}" if value == main and k in witness else "-"
                for k in (("readable_ssim", "image"), ("readable_ssim_far", "image"), ("readable_top1", "max-unauthorized"),
                          ("readable_ssim_blur", "image"), ("readable_blur_top1", "max-unauthorized"))]
        out.append(f"| {run.name} | {key}={value} | {seed} | {n} | {cell('top1', auth)} | "
                   f"{cell('strict_accuracy_cal', auth)} | {unauth} | {mean:.3f} ({mean_clean:.3f}) | "
                   f"{d.get(('ssim', auth), float('nan')):.3f} | {' | '.join(read)} |")
    return out


def within_chance(hits: int, n: int, chance: float, tests: int) -> bool:
    """``hits`` of ``n`` is what guessing at ``chance`` reaches: the demo's one-sided exact
    binomial test (``metrics.above_chance_p`` against ``demo.CHANCE_LEVEL``), its p-value times
    ``tests`` (the strongest of that many recognizers)."""
    from photoveil.demo import CHANCE_LEVEL
    from photoveil.evaluation.metrics import above_chance_p

    return min(1.0, tests * above_chance_p(hits, n, chance)) > CHANCE_LEVEL


def draws_cell(counts: list[tuple[int, int, int]]) -> str:
    """The row's first two cells from ``(right, clean right, queries)`` of the authorized
    recognizer per draw: the draw count, then its points against clean per draw and pooled."""
    per_draw = ", ".join("0.0" if k == kc else f"{100.0 * (k - kc) / n:+.1f}" for k, kc, n in counts)
    k, kc, n = (sum(c[i] for c in counts) for i in range(3))
    return f"| {len(counts)} draws | {per_draw} ({k}/{n}, clean {kc}, {100.0 * (k - kc) / n:+.1f}) |"


def pooled(runs: list[Path]) -> str:
    counts = []
    ranges: dict[str, list[float]] = defaultdict(list)
    chance_draws = {"readable_top1": 0, "readable_blur_top1": 0}
    for run in runs:
        recs = json.loads((run / "results.json").read_text())
        auth = next(r["evaluated_model"] for r in recs if r.get("role") == "authorized")

        def rec(metric, model, attack):
            return next(r for r in recs if r["metric"] == metric and r["evaluated_model"] == model
                        and r["attack"] == attack and r.get("transform", "none") == "none")
        top, clean = rec("top1", auth, "abuse"), rec("clean_top1", auth, "abuse")
        counts.append((round(top["value"] * top["n"]), round(clean["value"] * clean["n"]), top["n"]))
        chance = rec("readable_chance", auth, "readability")["value"]
        for metric in ("readable_ssim", "readable_ssim_blur"):
            ranges[metric].append(rec(metric, "image", "readability")["value"])
        for metric in chance_draws:
            strongest = rec(metric, "max-unauthorized", "readability")
            ranges[metric].append(strongest["value"])
            usable = sum(1 for r in recs if r["metric"] == metric.replace("_top1", "_clean_top1")
                         and r.get("role") == "unauthorized" and r["value"] >= 2 * chance)
            chance_draws[metric] += within_chance(round(strongest["value"] * strongest["n"]), strongest["n"],
                                                  chance, max(1, usable))
        ranges["mean_unauthorized"].append(rec("top1", "mean-unauthorized", "abuse")["value"])
        if any(r["evaluated_model"] == HELD_OUT for r in recs):
            ranges["held_out"].append(rec("top1", HELD_OUT, "abuse")["value"])
    cells = {m: f"{min(v):.3f}-{max(v):.3f}" for m, v in ranges.items()}
    return (f"{draws_cell(counts)} {cells['readable_ssim']} | "
            f"{cells['readable_top1']} (within chance on {chance_draws['readable_top1']}) | "
            f"{cells['readable_ssim_blur']} | {cells['readable_blur_top1']} (within chance on "
            f"{chance_draws['readable_blur_top1']}) | {cells['mean_unauthorized']} | "
            f"{cells.get('held_out', '-')} |")


def linkage(runs: list[Path]) -> str:
    """One row over seeded draws of the ``linkage`` attack: the authorized recognizer against
    a gallery of protected photos minus clean identification, in points per draw and pooled;
    each unauthorized recognizer's range over the draws; and on how many draws the strongest
    of them is within chance (the test of :func:`within_chance`, corrected over the
    recognizers)."""
    counts, within = [], 0
    ranges: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        recs = json.loads((run / "results.json").read_text())
        link = {r["evaluated_model"]: r for r in recs if r["metric"] == "linkage_top1"}
        auth = next(m for m, r in link.items() if r["role"] == "authorized")
        clean = next(r for r in recs if r["attack"] == "abuse" and r["metric"] == "clean_top1"
                     and r["evaluated_model"] == auth and r.get("transform", "none") == "none")
        n = link[auth]["n"]
        counts.append((round(link[auth]["value"] * n), round(clean["value"] * n), n))
        unauth = {m: r["value"] for m, r in link.items() if r["role"] == "unauthorized"}
        for m, v in unauth.items():
            ranges[m].append(v)
        chance = next(r["value"] for r in recs if r["metric"] in ("linkage_chance", "readable_chance"))  # both 1 / ids
        within += within_chance(round(max(unauth.values()) * n), n, chance, len(unauth))
    per_model = "; ".join(f"{m} {min(v):.3f}-{max(v):.3f}" for m, v in sorted(ranges.items()))
    return f"{draws_cell(counts)} {per_model} | within chance on {within} |"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python tools/unauthorized_table.py KEY RUN_DIR [RUN_DIR ...]\n"
              "       python tools/unauthorized_table.py --pooled|--linkage RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    missing = [r for r in argv[1:] if not (Path(r) / "results.json").is_file()]
    if missing:
        print(f"unauthorized_table: no results.json in {', '.join(missing)} (give photoveil evaluate --out folders)",
              file=sys.stderr)
        return 2
    if argv[0] == "--linkage":
        without = [r for r in argv[1:] if '"linkage_top1"' not in (Path(r) / "results.json").read_text()]
        if without:
            print(f"unauthorized_table: no linkage records in {', '.join(without)} (run photoveil evaluate with "
                  f"--attacks ...,linkage, and let it finish)", file=sys.stderr)
            return 2
    if argv[0] in ("--pooled", "--linkage"):
        print((pooled if argv[0] == "--pooled" else linkage)([Path(r) for r in argv[1:]]))
        return 0
    for run in argv[1:]:
        print("\n".join(rows(argv[0], Path(run))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
