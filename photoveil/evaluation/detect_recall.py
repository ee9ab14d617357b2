"""Face-detection recall of ``photoveil protect``'s detector, on LFW frames and on
composited full-size photos; prints a table and writes JSON.

* LFW: every image of the folder (``--lfw``, default the LFW dev copy), the full 250x250
  deep-funneled frame; the subject counts as found when a detection's box centre lies in
  the central face box (:data:`composites.FACE` of the frame) at a size within 2x of it.
* composites: ``--composites`` seeded photos of ``--size`` (default 4032x3024, 12 MP),
  each with faces from the same folder pasted at fractions of the long side drawn from
  ``--fractions`` (:mod:`.composites`); recall per fraction, and detections matching no
  pasted face (false positives on the procedural backgrounds).

Both detectors are measured: ``whole`` (BlazeFace on the photo squeezed to 256 px, what
protect did before) and ``multiscale`` (what it does now), with seconds per photo.

    photoveil models detect-recall --out runs/detect-recall
    (or python -m photoveil.evaluation.detect_recall ...)
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from photoveil.errors import InvalidInput


def _lfw_box(h: int, w: int, face: float):
    side = face * min(h, w)
    cx, cy = w / 2.0, h / 2.0
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def measure(args) -> dict:
    import numpy as np
    import torch

    from photoveil.evaluation.composites import FACE, composite, matches
    from photoveil.facemodels.align import load_image
    from photoveil.facemodels.detect import BlazeFaceDetector
    from photoveil.facemodels.multiscale import MultiScaleDetector

    torch.set_num_threads(args.threads)
    root = Path(args.lfw)
    files = sorted(root.rglob("*.jpg"))
    if not files:
        raise InvalidInput(f"no .jpg images under {str(root)!r}")
    base = BlazeFaceDetector(cache_dir=False)
    detectors = {"whole": base.detect, "multiscale": MultiScaleDetector(base).detect}
    lfw = random.Random(args.seed).sample(files, args.lfw_limit) if args.lfw_limit else files
    result: dict = {"lfw": {"folder": str(root), "images": len(lfw), "of": len(files)}, "composites": {}}
    for name, detect in detectors.items():
        if name not in args.detectors:
            continue
        hit, t0, missed = 0, time.perf_counter(), []
        for i, f in enumerate(lfw):
            img = load_image(f)
            box = _lfw_box(img.shape[1], img.shape[2], FACE)
            if any(matches(box, d.box) for d in detect(img)):
                hit += 1
            else:
                missed.append(str(f.relative_to(root)))
            if args.verbose and i % 500 == 0:
                print(f"lfw {name} {i}/{len(lfw)} recall so far {hit / (i + 1):.4f}", file=sys.stderr, flush=True)
        result["lfw"][name] = {"recall": hit / len(lfw), "found": hit,
                               "seconds_per_image": (time.perf_counter() - t0) / len(lfw), "missed": missed[:50]}
    rng = np.random.default_rng(args.seed)
    pick = random.Random(args.seed + 1)
    hw = (args.size[1], args.size[0])
    photos = []
    for _ in range(args.composites):
        n = int(rng.integers(1, args.max_faces + 1))
        fr = [float(rng.choice(args.fractions)) for _ in range(n)]
        faces = [(load_image(f), str(f.relative_to(root))) for f in pick.sample(files, n)]
        photos.append(composite(faces, fr, hw, rng))
    for name, detect in detectors.items():
        if name not in args.detectors:
            continue
        per: dict[float, list[int]] = {f: [0, 0] for f in args.fractions}
        fp, t0 = 0, time.perf_counter()
        for photo, placed in photos:
            dets = detect(photo)
            for p in placed:
                per[p.fraction][1] += 1
                per[p.fraction][0] += any(matches(p.box, d.box) for d in dets)
            fp += sum(not any(matches(p.box, d.box) for p in placed) for d in dets)
        total = [sum(v[0] for v in per.values()), sum(v[1] for v in per.values())]
        result["composites"][name] = {
            "recall": total[0] / max(1, total[1]), "faces": total[1],
            "per_fraction": {str(f): {"recall": v[0] / max(1, v[1]), "faces": v[1]} for f, v in per.items()},
            "false_positives": fp, "seconds_per_photo": (time.perf_counter() - t0) / max(1, len(photos))}
    result["composites"]["photos"] = len(photos)
    result["composites"]["size"] = list(args.size)
    result["settings"] = {"seed": args.seed, "fractions": args.fractions, "max_faces": args.max_faces,
                          "threads": args.threads}
    return result


def table(result: dict) -> str:
    lines = ["| detector | LFW frames recall (n) | s/image | composites recall (n) | "
             + " | ".join(f"{float(f) * 100:g} %" for f in result["settings"]["fractions"])
             + " | false pos. | s/photo |", "|---" * (6 + len(result["settings"]["fractions"])) + "|"]
    for name in ("whole", "multiscale"):
        lf, co = result["lfw"].get(name), result["composites"].get(name)
        if lf is None and co is None:
            continue
        cells = [name, f"{lf['recall']:.4f} ({result['lfw']['images']})" if lf else "-",
                 f"{lf['seconds_per_image']:.3f}" if lf else "-",
                 f"{co['recall']:.4f} ({co['faces']})" if co else "-"]
        cells += [f"{co['per_fraction'][str(f)]['recall']:.3f}" if co else "-" for f in result["settings"]["fractions"]]
        cells += [str(co["false_positives"]) if co else "-", f"{co['seconds_per_photo']:.2f}" if co else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from photoveil.paths import default_lfw_dir

    p.add_argument("--lfw", default=str(default_lfw_dir()), help="identity folder of face frames")
    p.add_argument("--lfw-limit", type=int, default=0, help="seeded sample of this many LFW images (0: all)")
    p.add_argument("--composites", type=int, default=60, help="composited photos")
    p.add_argument("--size", type=int, nargs=2, default=(4032, 3024), metavar=("W", "H"))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4],
                   help="face sizes as parts of the long side")
    p.add_argument("--max-faces", type=int, default=3, help="faces per composite, 1..N")
    p.add_argument("--detectors", nargs="+", choices=("whole", "multiscale"), default=["whole", "multiscale"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for detect-recall.json and detect-recall.md")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")


def run(args: argparse.Namespace) -> int:
    """Validate, measure, write ``detect-recall.json`` / ``.md`` and print the table."""
    if args.composites < 0 or args.lfw_limit < 0 or args.max_faces < 1 or args.threads < 1 or args.seed < 0:
        raise InvalidInput("--composites, --lfw-limit and --seed must be >= 0, --max-faces and --threads >= 1")
    if any(not 0.005 <= f <= 0.6 for f in args.fractions) or min(args.size) < 256:
        raise InvalidInput("--fractions must be in [0.005, 0.6] and --size at least 256 px each way")
    result = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detect-recall.json").write_text(json.dumps(result, indent=1) + "\n")
    md = table(result)
    (out / "detect-recall.md").write_text(md + "\n")
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m photoveil.evaluation.detect_recall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except InvalidInput as exc:
        print(f"detect_recall: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
