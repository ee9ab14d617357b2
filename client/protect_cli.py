"""``photoveil protect``: protect photos (files and folders) with PMT, FMD or the generator.

Each photo is read, its face detected and aligned to the authorized model's input size,
protected, and written as ``OUT/<name>.png`` (plus ``OUT/<name>.npy``, the shallow
features, with ``--features``: the upload-features case; ``OUT/features.json`` names the
model and split point they belong to, which the upload must state). A photo that cannot be read or
has no detectable face is reported by name and skipped; the others are still processed.
Exit code: 0 all protected, 1 some failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from photoveil.client.protect.factory import METHODS
from photoveil.client.protect.flags import add_method_flags, add_preset_flag, method_overrides
from photoveil.errors import InvalidInput, PhotoveilError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_MODEL = "faceapi-resnet34"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect photos before upload (pmt | fmd | generator)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="JPEG/PNG files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--method", choices=METHODS, default="pmt")
    add_preset_flag(p)
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help=f"authorized recognizer (repeat for MR-PMT); default {DEFAULT_MODEL}")
    p.add_argument("--alignment", choices=("landmarks", "center", "none"), default="landmarks",
                   help="landmarks: detect + align (default); center: centre crop; none: resize")
    p.add_argument("--features", action="store_true", help="pmt: also write the shallow features (.npy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="face-model cache (default: $PHOTOVEIL_CACHE or the user cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gallery", help="fmd: identity folder to enrol as the authorized classes "
                   "(default: the bundled sample faces plus the inputs, each its own identity)")
    add_method_flags(p, METHODS)
    p.set_defaults(func=main)


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files named directly or found under folders, in a stable order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise InvalidInput(f"input {item!r} does not exist (accepted: JPEG/PNG files or folders)")
    if not files:
        raise InvalidInput(f"no JPEG/PNG files found in {', '.join(inputs)}")
    return files


def settings(args: argparse.Namespace) -> dict:
    """The method's config fields from the flags, validated (and the authorized models
    checked) before any model loads."""
    from photoveil.client.protect.factory import build_config
    from photoveil.facemodels import registry

    values = {"seed": args.seed, "device": args.device, "batch_size": 16, **method_overrides(args, args.method, METHODS)}
    if args.method != "generator":
        values["progress"] = True
    build_config(args.method, args.preset, values)
    for name in args.models or [DEFAULT_MODEL]:
        role = registry.get_spec(name).role
        if role != "recognizer":
            recognizers = [s.name for s in registry.list_specs() if s.role == "recognizer"]
            raise InvalidInput(f"--model {name} is not a face recognizer (its role: {role}); accepted: {', '.join(recognizers)}")
    return values


def build_protector(args: argparse.Namespace, values: dict, faces=None):
    """The protector the flags and ``values`` (:func:`settings`) describe, and the input size
    its faces are aligned to."""
    from photoveil.client.protect.factory import build_protector as build
    from photoveil.facemodels import registry

    models = args.models or [DEFAULT_MODEL]
    sizes = {tuple(registry.get_spec(m).input_size) for m in models}
    if args.method == "generator":
        return build("generator", (), args.preset, values), registry.get_spec(models[0]).input_size
    if len(sizes) > 1:
        raise InvalidInput(f"authorized models take different input sizes {sorted(sizes)}; "
                           "MR-PMT needs models of one input size")
    size = sizes.pop()
    gallery = fmd_gallery(args, faces, size) if args.method == "fmd" else None
    return build(args.method, models, args.preset, values, gallery, cache_dir=args.cache_dir), size


def fmd_gallery(args, faces, size):
    """Enrolled identities for FMD's classification head: ``(images, labels)``."""
    import torch

    from photoveil.client.protect.factory import default_gallery
    from photoveil.data.faces import FaceDataset

    if args.gallery:
        ds = FaceDataset(Path(args.gallery), size[0], alignment=args.alignment, cache_dir=args.cache_dir)
        return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([ds[i][1] for i in range(len(ds))])
    imgs, labels = default_gallery(size[0], args.cache_dir)
    if faces is not None:  # each input photo is also its own identity
        imgs = torch.cat([imgs, faces])
        labels = torch.cat([labels, labels.max() + 1 + torch.arange(len(faces))])
    return imgs, labels


def save_png(image, path: Path) -> None:
    """``[3,H,W]`` float in [0,1] -> 8-bit RGB PNG."""
    from PIL import Image

    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from photoveil.facemodels import registry
    from photoveil.facemodels.align import align_faces

    if args.features and args.method != "pmt":
        raise InvalidInput("--features applies to --method pmt (the upload-features case)")
    if args.gallery and args.method != "fmd":
        raise InvalidInput("--gallery applies to --method fmd (its enrolled identities)")
    values = settings(args)
    files = collect_inputs(args.inputs)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = registry.get_spec((args.models or [DEFAULT_MODEL])[0]).input_size
    faces, names, failed = [], [], []
    for f in files:
        try:
            faces.append(align_faces([f], size[0], alignment=args.alignment, cache_dir=args.cache_dir,
                                     model=(args.models or [DEFAULT_MODEL])[0])[0])
            names.append(f)
        except PhotoveilError as exc:  # unreadable file, no face: report and go on
            failed.append(f)
            print(f"photoveil protect: {f}: {exc}", file=sys.stderr)
    if faces:
        batch = torch.stack(faces)
        protector, _ = build_protector(args, values, batch)
        protected = protector.protect(batch)
        feats = protector.features_of(protected) if args.features else None
        for i, f in enumerate(names):
            stem = out_dir / f.stem
            save_png(protected[i], stem.with_suffix(".png"))
            if feats is not None:
                np.save(stem.with_suffix(".npy"), feats[i].cpu().numpy())
        if feats is not None:  # what the upload needs to name: model and split point of the features
            uploader = protector.uploaders[0]
            (out_dir / "features.json").write_text(json.dumps(
                {"model": uploader.name, "split": uploader.points[-1], "shape": list(feats.shape[1:]),
                 "dtype": "float32"}, indent=1) + "\n")
    print(f"protected {len(names)} of {len(files)} photo(s) with {args.method} -> {out_dir}")
    return 1 if failed else 0
