"""``photoveil protect``: protect every face of your photos (files and folders) with PMT,
FMD or the generator, and get the full photos back.

Each photo is read (EXIF orientation applied; JPEG, PNG, WebP, and HEIC with pillow-heif),
every face in it found (BlazeFace over the whole photo and overlapping tiles) and aligned
to the authorized model's input, protected, and pasted back into the full-resolution
photo through the inverse of the alignment, feathered at the face region: pixels outside
the face regions are unchanged. The photo is written without the original's metadata
(no EXIF, GPS, XMP or ICC profile) at the oriented input's size.

Outputs mirror the input tree under --out: IMG_0001.jpg -> OUT/.../IMG_0001.<method>.png
(or beside the inputs with --in-place), and per face IMG_0001.<method>.face<k>.png, the
aligned protected crop the recognition service receives (for PMT, whose output is noise,
the photo shows the noise patch), plus IMG_0001.<method>.face<k>.npy, the upload features,
with --features. Nothing is overwritten without --overwrite; a rerun skips photos already
protected. OUT/photoveil-run.json records every input, face (box, landmarks, alignment
matrix), the resolved settings, times and failures; --json prints it.

Presets (explicit flags override them):
{presets}

Exit code: 0 all protected (or skipped), 1 some photos failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from photoveil.client.photos import FORMATS, save_png
from photoveil.client.protect.factory import METHODS
from photoveil.client.protect.flags import add_method_flags, add_preset_flag, method_overrides, resolve_preset
from photoveil.errors import InvalidInput

DEFAULT_MODEL = "faceapi-resnet34"
ALIGNMENTS = ("landmarks", "center", "none")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written with what each preset sets (read from the protectors'
    PRESETS only when help is printed: they import torch), and every flag's default."""

    def _format_text(self, text: str) -> str:
        if "{presets}" in text:
            text = text.replace("{presets}", _preset_lines())
        return super()._format_text(text)


def _preset_lines() -> str:
    from photoveil.client.protect.base import PRESET_NAMES, RECOMMENDED_PRESETS, get_protector

    lines = []
    for m in METHODS:
        presets = get_protector(m).PRESETS
        lines.append(f"  {m} (default: {RECOMMENDED_PRESETS[m]}):")
        lines += [f"    {n:<5} " + ", ".join(f"{k}={v}" for k, v in presets[n].items()) for n in PRESET_NAMES]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect every face of your photos (pmt | fmd | generator)",
                       description=__doc__, formatter_class=_Formatter)
    p.add_argument("inputs", nargs="+", help="photo files or folders (searched recursively)")
    p.add_argument("--out", help="output folder (created); required unless --in-place")
    p.add_argument("--in-place", action="store_true", help="write <stem>.<method>.<format> beside each input")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    p.add_argument("--format", choices=FORMATS, default="png", help="protected photo format")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality 1..95 (only with --format jpg; "
                                                            "default 95)")
    p.add_argument("--json", action="store_true", help="print the run manifest (JSON) on stdout")
    p.add_argument("--method", choices=METHODS, default="pmt")
    add_preset_flag(p, recommended=True)
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help=f"authorized recognizer (repeat for MR-PMT); default {DEFAULT_MODEL}")
    p.add_argument("--alignment", choices=ALIGNMENTS, default="landmarks",
                   help="landmarks: detect every face + align; center: centre crop; none: whole photo resized")
    p.add_argument("--features", action="store_true",
                   help="pmt: also write each face's upload features (.npy); needs an upload point that "
                        "resists reconstruction (--upload stem or --preset high) or an explicit --upload")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0")
    p.add_argument("--cache-dir", help="face-model cache (default: $PHOTOVEIL_CACHE or the user cache)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps")
    p.add_argument("--gallery", help="fmd: identity folder to enrol as the authorized classes "
                   "(default: the bundled sample faces plus the inputs, each its own identity)")
    add_method_flags(p, METHODS)
    p.set_defaults(func=main)


def validate(args: argparse.Namespace) -> dict:
    """Every flag checked, before any model loads: InvalidInput naming the flag and what
    it accepts. Returns the method's config values."""
    from photoveil.client.protect.factory import build_config
    from photoveil.facemodels import registry

    if not args.out and not args.in_place:
        raise InvalidInput("--out is required (or --in-place to write beside the inputs)")
    if args.quality is not None and args.format != "jpg":
        raise InvalidInput("--quality applies to --format jpg only")
    if args.format == "jpg":
        args.quality = 95 if args.quality is None else args.quality
        if not 1 <= args.quality <= 95:
            raise InvalidInput(f"--quality must be an int in [1, 95], got {args.quality}")
    if args.seed < 0:
        raise InvalidInput(f"--seed must be an int >= 0, got {args.seed}")
    if args.features and args.method != "pmt":
        raise InvalidInput("--features applies to --method pmt (the upload-features case)")
    if args.gallery and args.method != "fmd":
        raise InvalidInput("--gallery applies to --method fmd (its enrolled identities)")
    if args.gallery and not Path(args.gallery).is_dir():
        raise InvalidInput(f"--gallery {args.gallery!r} is not a folder (accepted: an identity folder DIR/<person>/<photo>)")
    if args.method == "generator" and args.models:
        raise InvalidInput("--model does not apply to --method generator (its checkpoint fixes the recognizer)")
    args.preset = resolve_preset(args.method, args.preset)
    values = {"seed": args.seed, "device": args.device, "batch_size": 16, **method_overrides(args, args.method, METHODS)}
    config = build_config(args.method, args.preset, values)
    for name in args.models or [DEFAULT_MODEL]:
        role = registry.get_spec(name).role
        if role != "recognizer":
            recognizers = [s.name for s in registry.list_specs() if s.role == "recognizer"]
            raise InvalidInput(f"--model {name} is not a face recognizer (its role: {role}); accepted: {', '.join(recognizers)}")
    if args.features:
        _check_upload(args, config)
    return values


def _check_upload(args, config) -> None:
    """--features refuses to upload the matched split's features unless asked for by
    name: they equal the clean face's features by construction, so whoever inverts clean
    features gets the face back (README, reconstruction: Level-1 decoder SSIM 0.516)."""
    upload = config.upload or config.split
    if args.upload is None and (upload is None or upload == config.split):
        point = upload or "the model's default split (block2 for faceapi-resnet34)"
        raise InvalidInput(f"--features with --preset {args.preset} would upload the matched {point} features, "
                           "which invert back to the face; pass --upload stem (the obfuscated image's features, "
                           "which do not), --preset high, or --upload SPLIT to send that point anyway")


def build_protector(args: argparse.Namespace, values: dict, faces=None):
    """The protector the flags and ``values`` describe, and the input size its faces are
    aligned to."""
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

    if args.gallery:  # enrolled as the faces it protects are cropped: on the authorized model's template
        ds = FaceDataset(Path(args.gallery), size[0], alignment=args.alignment, cache_dir=args.cache_dir,
                         model=(args.models or [DEFAULT_MODEL])[0])
        return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([ds[i][1] for i in range(len(ds))])
    imgs, labels = default_gallery(size[0], args.cache_dir)
    if faces is not None:  # each input face is also its own identity
        imgs = torch.cat([imgs, faces])
        labels = torch.cat([labels, labels.max() + 1 + torch.arange(len(faces))])
    return imgs, labels


def main(args: argparse.Namespace) -> int:
    from photoveil.client.photo_run import print_report, run
    from photoveil.facemodels import registry

    values = validate(args)
    model = (args.models or [DEFAULT_MODEL])[0]
    size = int(registry.get_spec(model).input_size[0])

    def detector():
        from photoveil.facemodels.multiscale import default_multiscale

        return default_multiscale(cache_dir=args.cache_dir)

    manifest, rc = run(args, values, lambda faces: build_protector(args, values, faces)[0], detector, size, model)
    print_report(manifest)
    if args.json:
        print(json.dumps(manifest, indent=1))
    return rc


__all__ = ["register", "main", "validate", "build_protector", "save_png", "DEFAULT_MODEL"]
