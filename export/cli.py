"""``photoveil export generator|shallow|pmt-step|fmd-step`` and ``photoveil bench``.

Examples::

    photoveil export shallow --model faceapi-resnet34 --size 112 --out artifacts/shallow
    photoveil export pmt-step --model faceapi-resnet34 --size 112 --out artifacts/pmt --explain
    photoveil export fmd-step --model faceapi-resnet34 --out artifacts/fmd
    photoveil export generator --checkpoint run/generator.pt --size 112 --int8 --out artifacts/gen
    photoveil bench --json --out bench/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from photoveil.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="lower a protection program to an ExecuTorch .pte (XNNPACK) + manifest",
                       description="Write <out>/<program>.pte and <out>/manifest.json (one artifact folder).")
    kinds = p.add_subparsers(dest="program", metavar="PROGRAM")
    kinds.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="artifact folder to write (created)")
    common.add_argument("--size", type=int, help="input height = width (default: the model's own size)")
    common.add_argument("--batch", type=int, default=1, help="batch size baked into the program (default 1)")
    common.add_argument("--explain", action="store_true", help="list the operators left outside XNNPACK")
    common.add_argument("--cache-dir", help="face-model cache (default $PHOTOVEIL_CACHE or the user cache)")
    face = argparse.ArgumentParser(add_help=False)
    face.add_argument("--model", default="faceapi-resnet34", help="authorized recognizer (registry name)")
    face.add_argument("--split", help="split point (default: the model's default split)")

    g = kinds.add_parser("generator", parents=[common], help="U-Net generator forward")
    g.add_argument("--checkpoint", help="generator checkpoint (or shipped name); omitted: a randomly "
                                        "initialised U-Net of --width (latency measurements only)")
    g.add_argument("--width", type=float, default=1.0, help="U-Net width without --checkpoint (1.0 = paper)")
    g.add_argument("--channels", type=int, default=3, help="image channels without --checkpoint")
    g.add_argument("--strength", type=float, default=1.0, help="perturbation scale baked in (0, 1]")
    g.add_argument("--int8", action="store_true", help="PT2E int8 quantization (XNNPACKQuantizer)")
    g.add_argument("--calibration", help="folder of images for int8 calibration (default: random + shipped faces)")
    g.set_defaults(func=main)

    s = kinds.add_parser("shallow", parents=[common, face], help="shallow-model forward (upload features)")
    s.add_argument("--int8", action="store_true", help="PT2E int8 quantization (XNNPACKQuantizer)")
    s.add_argument("--calibration", help="folder of images for int8 calibration")
    s.set_defaults(func=main)

    m = kinds.add_parser("pmt-step", parents=[common, face], help="one PMT iteration (host calls it N times)")
    m.add_argument("--preset", choices=("low", "mid", "high"), default="mid")
    for name, typ in (("steps", int), ("step-size", float), ("augment", str), ("kernel", str),
                      ("kernel-length", int), ("pool", int), ("init-sigma", float), ("aug-sigma", float)):
        m.add_argument(f"--{name}", type=typ)
    m.add_argument("--layers", nargs="*", default=None, help="extra split points for multi-layer aggregation")
    m.add_argument("--upload", help="split point of the program's features method (default: --split)")
    m.add_argument("--mode", choices=("fast", "exact"), default="fast", help="backward rewrites (export/gradients.py)")
    m.set_defaults(func=main)

    f = kinds.add_parser("fmd-step", parents=[common, face], help="one FMD iteration (host calls it N times)")
    f.add_argument("--preset", choices=("low", "mid", "high"), default="mid")
    for name, typ in (("steps", int), ("eps", float), ("alpha", float), ("lam", float)):
        f.add_argument(f"--{name}", type=typ)
    f.add_argument("--mode", choices=("fast", "exact"), default="fast")
    f.set_defaults(func=main)

    from photoveil.export import bench

    bench.register(sub)


def _calibration(folder, shape, n: int = 16):
    """Calibration batches: images of ``folder`` (resized), else shipped faces + noise."""
    import torch
    import torch.nn.functional as F

    from photoveil.paths import ASSETS

    _, c, h, w = shape
    root = Path(folder) if folder else ASSETS / "faces"
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if folder and not files:
        raise InvalidInput(f"no .jpg/.png images under {folder} for calibration")
    batches = []
    if files:
        from PIL import Image

        for p in files:
            img = Image.open(p).convert("RGB" if c == 3 else "L")
            t = torch.from_numpy(__import__("numpy").asarray(img, dtype="float32") / 255.0)
            t = t.permute(2, 0, 1) if t.dim() == 3 else t[None]
            batches.append((F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
                            .expand(shape[0], -1, -1, -1).contiguous(),))
    gen = torch.Generator().manual_seed(0)
    while len(batches) < n:
        batches.append((torch.rand(shape, generator=gen),))
    return batches


def _overrides(args, names):
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def build(args):
    """The :class:`Program` the arguments describe."""
    import torch

    from photoveil.export import programs as P

    if args.batch < 1:
        raise InvalidInput(f"--batch must be >= 1, got {args.batch}")
    if args.program == "generator":
        from photoveil.nets.unet import UNetGenerator

        if args.checkpoint:
            from photoveil.client.protect.generator import GeneratorProtector
            from photoveil.nets.unet import load_generator

            net, meta = load_generator(GeneratorProtector._resolve(args.checkpoint))
            model_id = Path(args.checkpoint).stem
            trained_size = (meta.get("config") or {}).get("image_size")
        else:
            torch.manual_seed(0)
            net, model_id = UNetGenerator(in_channels=args.channels, width=args.width), f"unet-w{args.width:g}-untrained"
            trained_size = None
        prog = P.generator_program(net.eval(), size=args.size or trained_size or 112, batch=args.batch, strength=args.strength,
                                   model_id=model_id)
    elif args.program == "shallow":
        prog = P.shallow_program(args.model, args.split, args.size, args.batch, cache_dir=args.cache_dir)
    elif args.program == "pmt-step":
        from photoveil.client.protect.pmt import PMTProtector

        cfg = _overrides(args, ("steps", "step_size", "augment", "kernel", "kernel_length", "pool", "init_sigma",
                                "aug_sigma", "split", "upload"))
        if args.layers is not None:
            cfg["layers"] = tuple(args.layers)
        config = PMTProtector.preset_config(args.preset, **cfg)
        prog = P.pmt_step_program(args.model, config, args.size, args.batch, mode=args.mode, cache_dir=args.cache_dir)
    else:
        from photoveil.client.protect.fmd import FMDProtector

        config = FMDProtector.preset_config(args.preset, **_overrides(args, ("steps", "eps", "alpha", "lam")))
        clf, model_id, split = P.gallery_classifier(args.model, args.split, cache_dir=args.cache_dir)
        from photoveil.facemodels import registry

        size = args.size or registry.get_spec(args.model).input_size[0]
        prog = P.fmd_step_program(clf, config, size, args.batch, mode=args.mode, model_id=model_id, split=split)
    if getattr(args, "int8", False):
        prog.options.quantize = "int8"
        prog.options.calibration = _calibration(args.calibration, tuple(prog.inputs[0].shape))
        prog.options.__post_init__()
    return prog


def main(args) -> int:
    from rich.console import Console

    from photoveil.export.lowering import export_program

    console = Console(stderr=True)
    with console.status(f"tracing {args.program} ..."):
        prog = build(args)
    with console.status(f"lowering {args.program} to XNNPACK ({prog.options.quantize}) ..."):
        art = export_program(prog.module, prog.inputs, prog.options, args.out)
    m = art.manifest
    print(json.dumps({"pte": str(art.pte), "manifest": str(art.manifest_path), "sha256": m["sha256"],
                      "pte_bytes": m["pte_bytes"], "delegates": m["delegates"],
                      "non_delegated_ops": m["non_delegated_ops"]}, indent=2))
    if args.explain:
        from photoveil.export.explain import explain

        with console.status("explaining delegation ..."):
            rep = explain(prog.module, prog.inputs, prog.options)
        print(rep.table())
    return 0
