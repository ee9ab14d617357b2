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

from photoveil.errors import InvalidInput, PhotoveilError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_MODEL = "faceapi-resnet34"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect photos before upload (pmt | fmd | generator)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="JPEG/PNG files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--method", choices=("pmt", "fmd", "generator"), default="pmt")
    p.add_argument("--preset", choices=("low", "mid", "high"), default="mid",
                   help="hyper-parameter preset; explicit flags below override it")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help=f"authorized recognizer (repeat for MR-PMT); default {DEFAULT_MODEL}")
    p.add_argument("--alignment", choices=("landmarks", "center", "none"), default="landmarks",
                   help="landmarks: detect + align (default); center: centre crop; none: resize")
    p.add_argument("--features", action="store_true", help="pmt: also write the shallow features (.npy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="face-model cache (default: $PHOTOVEIL_CACHE or the user cache)")
    p.add_argument("--device", default="cpu")
    g = p.add_argument_group("pmt (0-255 pixel units)")
    g.add_argument("--steps", type=int)
    g.add_argument("--step-size", type=float)
    g.add_argument("--init", choices=("gaussian", "sort", "blur"))
    g.add_argument("--init-sigma", type=float)
    g.add_argument("--augment", choices=("noise", "affine", "mix", "none"))
    g.add_argument("--split", help="split point ending the shallow model (see `photoveil models list`)")
    g.add_argument("--layers", nargs="*", help="extra split points for multi-layer aggregation")
    g.add_argument("--upload", help="pmt --features: split point whose features are written (default: --split); "
                                    "a shallower one sends the obfuscated image's features, which do not invert to the face")
    g.add_argument("--kernel", choices=("gaussian", "linear", "none"))
    g.add_argument("--kernel-length", type=int)
    g = p.add_argument_group("fmd (0-255 pixel units)")
    g.add_argument("--eps", type=float)
    g.add_argument("--alpha", type=float)
    g.add_argument("--lam", type=float)
    g.add_argument("--gallery", help="identity folder to enrol as the authorized classes "
                   "(default: the bundled sample faces plus the inputs, each its own identity)")
    g = p.add_argument_group("generator")
    g.add_argument("--checkpoint", help="generator checkpoint path or shipped name (default: face)")
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


def overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """Flags the user actually gave (None = take the preset's value)."""
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "layers" in out:
        out["layers"] = tuple(out["layers"])
    return out


def build_protector(args: argparse.Namespace, faces=None):
    """The protector the flags describe, and the input size its faces are aligned to."""
    from photoveil.client.protect import get_protector
    from photoveil.facemodels import registry

    common = {"seed": args.seed, "device": args.device, "progress": True, "batch_size": 16}
    models = args.models or [DEFAULT_MODEL]
    if args.method == "generator":
        cls = get_protector("generator")
        cfg = {**common, **overrides(args, ("checkpoint",))}
        cfg.pop("progress")
        prot = cls.from_preset(args.preset, **cfg)
        return prot, registry.get_spec(models[0]).input_size
    nets = [registry.load(m, cache_dir=args.cache_dir) for m in models]
    sizes = {tuple(n.spec.input_size) for n in nets}
    if len(sizes) > 1:
        raise InvalidInput(f"authorized models take different input sizes {sorted(sizes)}; "
                           "MR-PMT needs models of one input size")
    size = sizes.pop()
    if args.method == "pmt":
        cls = get_protector("pmt")
        cfg = {**common, **overrides(args, ("steps", "step_size", "init", "init_sigma", "augment",
                                            "split", "layers", "upload", "kernel", "kernel_length"))}
        return cls.from_preset(args.preset, nets, cache_dir=args.cache_dir, **cfg), size
    if len(nets) > 1:
        raise InvalidInput("fmd protects one authorized model; give a single --model")
    from photoveil.client.protect.fmd import GalleryClassifier

    gallery, labels = fmd_gallery(args, faces, size)
    clf = GalleryClassifier.from_facenet(nets[0], nets[0].spec.resolve_split(args.split), gallery, labels)
    cls = get_protector("fmd")
    cfg = {**common, **overrides(args, ("steps", "eps", "alpha", "lam"))}
    return cls.from_preset(args.preset, clf, **cfg), size


def fmd_gallery(args, faces, size):
    """Enrolled identities for FMD's classification head: ``(images, labels)``."""
    import torch

    from photoveil.data.faces import FaceDataset
    from photoveil.paths import ASSETS

    folder = Path(args.gallery) if args.gallery else ASSETS / "faces"
    ds = FaceDataset(folder, size[0], alignment="center" if not args.gallery else args.alignment,
                     cache_dir=args.cache_dir)
    imgs = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    if faces is not None and not args.gallery:  # each input photo is also its own identity
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
        protector, _ = build_protector(args, batch)
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
