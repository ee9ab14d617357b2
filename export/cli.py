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

from photoveil.artifact import LAYOUTS
from photoveil.client.protect.flags import add_method_flags, add_preset_flag, method_overrides
from photoveil.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="lower a protection program to an ExecuTorch .pte (XNNPACK) + manifest",
                       description="Write one artifact folder: <out>/<program>.pte and its manifest.")
    kinds = p.add_subparsers(dest="program", metavar="PROGRAM")
    kinds.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="artifact folder to write (created)")
    common.add_argument("--size", type=int, help="input height = width (default: the model's own size)")
    common.add_argument("--batch", type=int, default=1, help="batch size baked into the program (default 1)")
    common.add_argument("--explain", action="store_true", help="list the operators left outside XNNPACK")
    common.add_argument("--golden", nargs="?", const="", metavar="DIR",
                        help="also write golden vectors (fixed inputs, expected outputs) to DIR "
                             "(default <out>.golden, beside the artifact; see export/golden.py)")
    common.add_argument("--golden-steps", type=int, default=5,
                        help="steps of the recorded full run of a step program (default 5)")
    common.add_argument("--cache-dir", help="face-model cache (default $PHOTOVEIL_CACHE or the user cache)")
    face = argparse.ArgumentParser(add_help=False)
    face.add_argument("--model", default="faceapi-resnet34", help="authorized recognizer (registry name)")

    g = kinds.add_parser("generator", parents=[common], help="U-Net generator forward")
    add_method_flags(g, ("generator",))
    g.add_argument("--width", type=float, default=1.0, help="U-Net width without --checkpoint (1.0 = paper); "
                                                            "no --checkpoint: an untrained U-Net (latency only)")
    g.add_argument("--channels", type=int, default=3, help="image channels without --checkpoint")
    g.add_argument("--int8", action="store_true", help="PT2E int8 quantization (XNNPACKQuantizer)")
    g.add_argument("--calibration", help="folder of images for int8 calibration (default: random + shipped faces)")
    g.set_defaults(func=main, preset=None)

    s = kinds.add_parser("shallow", parents=[common, face], help="shallow-model forward (upload features)")
    s.add_argument("--split", help="split point (default: the model's default split)")
    s.add_argument("--int8", action="store_true", help="PT2E int8 quantization (XNNPACKQuantizer)")
    s.add_argument("--calibration", help="folder of images for int8 calibration")
    s.add_argument("--layout", choices=LAYOUTS, default="NCHW",
                   help="memory layout of the image and features (default NCHW; NHWC is XNNPACK's own and a little "
                        "faster, but ExecuTorch's Java Tensor cannot pass it)")
    s.set_defaults(func=main)

    for kind, method, what in (("pmt-step", "pmt", "one PMT iteration (host calls it N times)"),
                               ("fmd-step", "fmd", "one FMD iteration (host calls it N times)")):
        k = kinds.add_parser(kind, parents=[common, face], help=what)
        add_preset_flag(k)
        add_method_flags(k, (method,))
        k.add_argument("--mode", choices=("fast", "exact"), default="fast",
                       help="backward rewrites (export/gradients.py)")
        k.set_defaults(func=main)

    from photoveil.export import bench

    bench.register(sub)


def build(args):
    """The :class:`Program` the arguments describe (settings validated before any model loads)."""
    import torch

    from photoveil.artifact import KINDS
    from photoveil.client.protect.factory import build_config, fmd_classifier
    from photoveil.export import programs as P
    from photoveil.export.calibration import quantize_int8

    if args.batch < 1:
        raise InvalidInput(f"--batch must be >= 1, got {args.batch}")
    if getattr(args, "golden", None) is not None and not 1 <= args.golden_steps <= 1000:
        raise InvalidInput(f"--golden-steps must be in 1..1000, got {args.golden_steps}")
    if getattr(args, "golden", None) and Path(args.golden).resolve() == Path(args.out).resolve():
        raise InvalidInput("--golden must name a folder beside the artifact, not --out itself "
                           "(the signature covers the whole artifact folder)")
    method = KINDS[args.program].protection
    config = None
    if method:
        config = build_config(method, args.preset, method_overrides(args, method, (method,)))
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
        prog = P.generator_program(net.eval(), size=args.size or trained_size or 112, batch=args.batch,
                                   strength=config.strength, model_id=model_id)
    elif args.program == "shallow":
        prog = P.shallow_program(args.model, args.split, args.size, args.batch, cache_dir=args.cache_dir,
                                 layout=args.layout)
    elif args.program == "pmt-step":
        prog = P.pmt_step_program(args.model, config, args.size, args.batch, mode=args.mode, cache_dir=args.cache_dir)
    else:
        from photoveil.facemodels import registry

        clf, model_id, split = fmd_classifier(args.model, config.split, cache_dir=args.cache_dir)
        size = args.size or registry.get_spec(args.model).input_size[0]
        prog = P.fmd_step_program(clf, config, size, args.batch, mode=args.mode, model_id=model_id, split=split)
    if getattr(args, "int8", False):
        quantize_int8(prog, args.calibration)
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
    record = {"pte": str(art.pte), "manifest": str(art.manifest_path), "sha256": m.sha256,
              "pte_bytes": m.pte_bytes, "delegates": m.delegates, "non_delegated_ops": m.non_delegated_ops}
    if args.golden is not None:
        from photoveil.export.golden import write_golden

        with console.status("writing golden vectors on the ExecuTorch runtime ..."):
            record["golden"] = str(write_golden(art.pte.parent, args.golden or None, steps=args.golden_steps))
    print(json.dumps(record, indent=2))
    if args.explain:
        from photoveil.export.explain import explain

        with console.status("explaining delegation ..."):
            rep = explain(prog.module, prog.inputs, prog.options)
        print(rep.table())
    return 0
