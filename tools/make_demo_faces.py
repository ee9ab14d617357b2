"""Make the demo's 20-identity fixture photoveil/assets/demo_faces from the shared LFW copy.

Twenty identities drawn (seed 20) from the identities that generator training holds out
(``split_identities(test_fraction=0.2, seed=0)``, so no shipped generator saw them) with at
least three photos; the first three photos of each (two enrolled, one held-out query),
centre-cropped to 170x170 (the face and some context; the demo aligns them with landmarks)
and stored as JPEG quality 88 (~7 KB each). Run: ``python tools/make_demo_faces.py``.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

from photoveil.data.faces import scan_identity_folder, split_identities
from photoveil.paths import ASSETS, default_lfw_dir

N_IDENTITIES, PHOTOS, SEED, CROP = 20, 3, 20, 170


def main() -> int:
    folder = scan_identity_folder(default_lfw_dir())
    _, test = split_identities(folder, test_fraction=0.2, seed=0)
    names = [n for n in test.identities if len(test.images[n]) >= PHOTOS]
    chosen = sorted(random.Random(SEED).sample(names, N_IDENTITIES))
    out = ASSETS / "demo_faces"
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in chosen:
        (out / name).mkdir(exist_ok=True)
        for src in test.images[name][:PHOTOS]:
            img = Image.open(src).convert("RGB")
            w, h = img.size
            box = ((w - CROP) // 2, (h - CROP) // 2, (w + CROP) // 2, (h + CROP) // 2)
            img.crop(box).save(out / name / src.name, quality=88)
            lines.append(f"{name}/{src.name}  <- lfw/{src.relative_to(src.parents[1])}  (centre {CROP}x{CROP})")
    (out / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(chosen)} identities, {len(lines)} photos -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
