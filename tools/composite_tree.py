"""Make a labelled tree of full-size "phone photos" for ``photoveil evaluate --data``.

OUT/<person>/IMG_<k>.jpg: each photo is one LFW frame of that person pasted at a seeded
size (--fractions of the long side) onto a procedural background
(:mod:`photoveil.evaluation.composites`); every third photo is stored rotated with EXIF
orientation 6, as phones do. People are drawn (seeded) from the identities with enough
frames, so a tree made with another seed holds other people.

    python tools/composite_tree.py --lfw ../shared/data/lfw --people 6 --photos 3 --out runs/tree
    photoveil evaluate --data runs/tree --method pmt --threads 1
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $PHOTOVEIL_LFW or the shared copy)")
    p.add_argument("--people", type=int, default=6)
    p.add_argument("--photos", type=int, default=3, help="photos per person")
    p.add_argument("--size", default="4032x3024", help="WxH of each photo (default 4032x3024, 12 MP)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3],
                   help="face size as a part of the long side, cycled over the photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        print(f"composite_tree: --size must look like 4032x3024, got {a.size!r}", file=sys.stderr)
        return 2
    if a.people < 2 or a.photos < 2 or not all(0.02 <= f <= 0.6 for f in a.fractions):
        print("composite_tree: need --people >= 2, --photos >= 2 and --fractions in [0.02, 0.6]", file=sys.stderr)
        return 2
    if a.out.exists() and any(a.out.iterdir()):
        print(f"composite_tree: {a.out} is not empty (nothing is overwritten)", file=sys.stderr)
        return 2

    from photoveil.data.faces import scan_identity_folder
    from photoveil.evaluation.composites import composite
    from photoveil.facemodels.align import load_image
    from photoveil.paths import default_lfw_dir

    folder = scan_identity_folder(a.lfw or default_lfw_dir())
    eligible = [n for n in folder.identities if len(folder.images[n]) >= a.photos]
    rng = random.Random(a.seed)
    nrng = np.random.default_rng(a.seed)
    for name in sorted(rng.sample(eligible, min(a.people, len(eligible)))):
        person = a.out / name
        person.mkdir(parents=True)
        for k, src in enumerate(sorted(rng.sample(list(folder.images[name]), a.photos))):
            photo, placed = composite([(load_image(src), name)], [a.fractions[k % len(a.fractions)]], (h, w), nrng)
            im = Image.fromarray((photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            dest = person / f"IMG_{k:04d}.jpg"
            if k % 3 == 2:
                exif = Image.Exif()
                exif[0x0112] = 6  # rotate 90 degrees clockwise to display
                im.transpose(Image.Transpose.ROTATE_90).save(dest, exif=exif.tobytes(), quality=92)
            else:
                im.save(dest, quality=92)
            print(f"{dest}  <- {src.name} at {a.fractions[k % len(a.fractions)]:.2f} ({len(placed)} face)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
