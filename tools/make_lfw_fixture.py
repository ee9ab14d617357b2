"""Regenerate tests/fixtures/lfw_small from the shared LFW deep-funneled copy.

    python tools/make_lfw_fixture.py [--lfw /work/shared/data/lfw] [--out tests/fixtures/lfw_small]

Picks ``--identities`` people (seeded) among those with >= ``--per-identity`` images in
which BlazeFace finds exactly one face, copies the first ``--per-identity`` such images
re-encoded as 250x250 JPEG (quality ``--quality``), and writes ``pairs.txt`` in LFW's
View-2 format: every same-person pair plus as many seeded different-person pairs.
Needs the pulled face models (``photoveil models pull``) for the one-face check.
"""
from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from photoveil.data.faces import scan_identity_folder  # noqa: E402
from photoveil.paths import default_lfw_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, default=default_lfw_dir())
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "lfw_small")
    ap.add_argument("--identities", type=int, default=10)
    ap.add_argument("--per-identity", type=int, default=4)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from photoveil.facemodels.align import load_image
    from photoveil.facemodels.detect import default_detector

    torch.set_num_threads(1)
    folder = scan_identity_folder(args.lfw, min_images=args.per_identity)
    names = folder.identities
    random.Random(args.seed).shuffle(names)
    detector = default_detector(cache_dir=False)
    chosen: dict[str, list[Path]] = {}
    for name in names:
        good = [p for p in folder.images[name] if len(detector.detect(load_image(p))) == 1]
        if len(good) >= args.per_identity:
            chosen[name] = good[:args.per_identity]
        if len(chosen) == args.identities:
            break
    if len(chosen) < args.identities:
        print(f"only {len(chosen)} identities qualify", file=sys.stderr)
        return 1

    images_dir = args.out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    same, files = [], []
    for name in sorted(chosen):
        (images_dir / name).mkdir(parents=True)
        for k, src in enumerate(chosen[name], 1):
            dst = images_dir / name / f"{name}_{k:04d}.jpg"
            with Image.open(src) as im:
                im.convert("RGB").resize((250, 250)).save(dst, quality=args.quality)
            files.append((name, k, src.name))
        same += [f"{name}\t{a}\t{b}" for a, b in itertools.combinations(range(1, args.per_identity + 1), 2)]
    rng = random.Random(args.seed)
    diff: set[str] = set()
    while len(diff) < len(same):
        a, b = sorted(rng.sample(sorted(chosen), 2))
        diff.add(f"{a}\t{rng.randint(1, args.per_identity)}\t{b}\t{rng.randint(1, args.per_identity)}")
    (args.out / "pairs.txt").write_text("\n".join(same + sorted(diff)) + "\n")
    (args.out / "SOURCES.txt").write_text(
        "".join(f"images/{n}/{n}_{k:04d}.jpg <- lfw images/{n}/{src}\n" for n, k, src in files))
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(files)} images of {len(chosen)} identities, {len(same)} same + "
          f"{len(diff)} different pairs, {total / 1024:.0f} KiB to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
