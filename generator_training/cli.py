"""``photoveil generator train|matrix|test``: train perturbation generators, reproduce the paper's matrix.

Examples::

    photoveil generator train --target resnet18 --aux vgg13_bn --width 0.25 --epochs 3 \\
        --subset 10000 --out runs/gen/resnet18__vgg13_bn
    photoveil generator matrix --archs resnet18,vgg13_bn,mobilenet_v2,googlenet \\
        --width 0.25 --epochs 2 --subset 8000 --out runs/matrix --json
"""
from __future__ import annotations

import argparse

from photoveil.generator_training.config import FACE_TEMPLATES, LR_SCHEDULES, MAX_RANK_BANK, SSIM_MODES  # plain constants: cheap to import

DATASET_TASK = {"lfw": "face"}  # every other dataset name is a classification dataset


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist | cifar10 | imagefolder (classification) or lfw (faces) [fashion-mnist]")
    p.add_argument("--width", type=float, default=1.0,
                   help="U-Net width multiplier; 1.0 = paper's 7.766 M params, 0.25 = 0.49 M [1.0]")
    p.add_argument("--epochs", type=int, default=100, help="max epochs (paper: 100) [100]")
    p.add_argument("--subset", type=int, default=None, help="train on a seeded random subset of N images")
    p.add_argument("--val-size", type=int, default=5000, help="validation images from the test split [5000]")
    p.add_argument("--batch-size", type=int, default=256, help="paper: 256 [256]")
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate (paper: 5e-3) [5e-3]")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                   help="constant (paper) or cosine decay to 0 after a 5 %% warm-up, for short runs [constant]")
    p.add_argument("--aux-ce-cap", type=float, default=5.0,
                   help="per-image cap on the aux CE; 0 = unbounded as in the paper [5.0]")
    p.add_argument("--w-target", type=float, default=1.0, help="weight of the target term (paper: 1.0) [1.0]")
    p.add_argument("--w-aux", type=float, default=1.0, help="weight of the aux term (paper: 1.0) [1.0]")
    p.add_argument("--w-ssim", type=float, default=0.5, help="weight of the SSIM term (paper: 0.5) [0.5]")
    p.add_argument("--ssim-mode", choices=SSIM_MODES, default="abs", help="loss on |SSIM| or SSIM [abs]")
    p.add_argument("--crop-pad", type=int, default=0,
                   help="random-crop shift of training images; match the critics' training [0]")
    p.add_argument("--no-augment", action="store_true", help="no crop/flip augmentation")
    p.add_argument("--aux-rescale", type=float, default=0.0,
                   help="aux sees x' down-scaled by a random factor in [1-R, 1) during training, R <= 0.95 [0: off]")
    from photoveil.generator_training.config import GeneratorTrainConfig as C  # defaults: the dataclass

    p.add_argument("--w-readable", type=float, default=C.w_readable,
                   help="weight of the readability witness (|SSIM| + |edge corr.| after normalisation) "
                        f"[{C.w_readable}]")
    p.add_argument("--w-readable-far", type=float, default=C.w_readable_far,
                   help=f"weight of the same term on the far (quarter-size) view [{C.w_readable_far}]")
    p.add_argument("--w-readable-blur", type=float, default=C.w_readable_blur,
                   help=f"weight of the same term on the out-of-focus (Gaussian low-pass) view [{C.w_readable_blur}]")
    p.add_argument("--w-readable-aux", type=float, default=C.w_readable_aux,
                   help=f"weight of the aux recognizer on the normalised image [{C.w_readable_aux}]")
    p.add_argument("--w-target-centred", type=float, default=C.w_target_centred,
                   help="face task: weight of the target term on embeddings centred on the mean face "
                        f"(1 - cosine) [{C.w_target_centred}]")
    p.add_argument("--w-target-rank", type=float, default=C.w_target_rank,
                   help="face task: weight of the ranking term, each protected face nearer its own clean face "
                        f"than the batch's other people on the target [{C.w_target_rank}]")
    p.add_argument("--rank-bank", type=int, default=C.rank_bank,
                   help="face task: the ranking term's negatives also hold the clean target embeddings of the last "
                        f"N faces of earlier batches, 0..{MAX_RANK_BANK} (needs --w-target-rank) [{C.rank_bank}]")
    p.add_argument("--w-readable-aux-blur", type=float, default=C.w_readable_aux_blur,
                   help=f"weight of the aux recognizer on the out-of-focus view [{C.w_readable_aux_blur}]")
    p.add_argument("--w-readable-aux-gap", type=float, default=C.w_readable_aux_gap,
                   help="weight of the aux recognizer's gallery gap on the median and out-of-focus views: own "
                        f"clean face no nearer than the batch's other people [{C.w_readable_aux_gap}]")
    p.add_argument("--w-link", type=float, default=C.w_link,
                   help="face task: weight of the link term, two protected photos of one person no nearer each "
                        "other for the aux than other people's; > 0 trains on batches of people x 2 photos "
                        f"[{C.w_link}]")
    p.add_argument("--init-from", default=C.init_from,
                   help="fine-tune from this generator checkpoint (shipped name or path) [random init]")
    p.add_argument("--image-size", type=int, default=None, help="training size (faces: recognizer input) [32]")
    p.add_argument("--face-template", choices=FACE_TEMPLATES, default=C.face_template,
                   help="faces: align on the target's template and let the aux re-align each view onto its own "
                        f"(as the phone and evaluate do), or everything on ArcFace's [{C.face_template}]")
    p.add_argument("--precision", default="auto", help="auto | 32 | 16-mixed | bf16-mixed [auto]")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers [0]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (resumed if it holds a run)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto | cpu | gpu [auto]")
    p.add_argument("--devices", default="auto", help="Lightning devices: auto | N | list [auto]")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp [auto]")
    p.add_argument("--json", action="store_true", help="print the result records as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub) -> None:
    parser = sub.add_parser("generator", help="protective perturbation generator: train, pair matrix")
    gsub = parser.add_subparsers(dest="generator_command", metavar="ACTION")
    gsub.required = True

    p = gsub.add_parser("train", help="train one generator against a target (and an aux) model")
    p.add_argument("--target", required=True, help="authorized model: zoo arch or face-model name")
    p.add_argument("--aux", default=None, help="auxiliary (adversary stand-in) model; omit for no-aux")
    p.add_argument("--num-nodes", type=int, default=1, help="Lightning num_nodes [1]")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (-1: epochs decide) [-1]")
    p.add_argument("--no-test", action="store_true", help="skip the test-split figures (smoke and DDP checks)")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = gsub.add_parser("matrix", help="paper's target x aux evaluation over zoo archs")
    p.add_argument("--archs", required=True, help="comma-separated zoo archs (>= 2)")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-aux generator per target")
    _common(p)
    p.set_defaults(func=cmd_matrix)

    p = gsub.add_parser("test", help="a classification generator on its test images (eager, and a .pte of it)")
    p.add_argument("--checkpoint", required=True, help="generator checkpoint path or shipped name")
    p.add_argument("--artifact", default=None,
                   help="also run this exported generator program (e.g. an --int8 export) and report the change")
    p.add_argument("--aux", default=None, help="auxiliary model to evaluate (default: the one it was trained against)")
    p.add_argument("--images", type=int, default=None, help="first N test images (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-verify", action="store_true", help="skip the manifest sha256 check of the .pte")
    p.add_argument("--out", default=None, help="also write the JSON record to FILE")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_test)


def _devices(value: str):
    return int(value) if value.isdigit() else value


def _config(args, target: str, aux: str | None):
    from photoveil.errors import InvalidInput
    from photoveil.generator_training.config import GeneratorTrainConfig

    task = DATASET_TASK.get(args.dataset, "classification")
    if task == "classification":
        from photoveil.data.classification import dataset_info

        _, in_channels, size = dataset_info(args.dataset)
    else:
        in_channels, size = 3, 112
    try:
        return GeneratorTrainConfig(
            task=task, dataset=args.dataset, target=target, aux=aux, width=args.width,
            in_channels=in_channels, image_size=args.image_size or size, epochs=args.epochs,
            subset=args.subset, val_size=args.val_size, batch_size=args.batch_size, lr=args.lr,
            lr_schedule=args.lr_schedule, aux_ce_cap=args.aux_ce_cap or None, ssim_mode=args.ssim_mode,
            precision=args.precision, w_target=args.w_target, w_aux=args.w_aux, w_ssim=args.w_ssim,
            aux_rescale=args.aux_rescale, w_readable=args.w_readable, w_readable_far=args.w_readable_far,
            w_readable_blur=args.w_readable_blur, w_readable_aux=args.w_readable_aux,
            w_readable_aux_blur=args.w_readable_aux_blur, w_target_centred=args.w_target_centred,
            w_target_rank=args.w_target_rank, rank_bank=args.rank_bank, w_readable_aux_gap=args.w_readable_aux_gap,
            w_link=args.w_link, face_template=args.face_template, init_from=args.init_from,
            augment=not args.no_augment, crop_pad=args.crop_pad, num_workers=args.num_workers, seed=args.seed)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _check_archs(names: list[str], task: str) -> None:
    if task != "classification":
        return
    from photoveil.errors import InvalidInput
    from photoveil.zoo.registry import ARCHS

    bad = [n for n in names if n not in ARCHS]
    if bad:
        raise InvalidInput(f"unknown arch(s) {', '.join(bad)}; zoo archs: {', '.join(ARCHS)}")


def cmd_train(args) -> int:
    import json

    from photoveil.generator_training.train import train

    aux = None if args.aux in (None, "", "none") else args.aux
    cfg = _config(args, args.target, aux)
    _check_archs([n for n in (args.target, aux) if n], cfg.task)
    if args.max_steps == 0 or args.max_steps < -1:
        from photoveil.errors import InvalidInput

        raise InvalidInput(f"--max-steps must be >= 1 or -1 (no limit), got {args.max_steps}")
    result = train(cfg, args.out, accelerator=args.accelerator, devices=_devices(args.devices),
                   strategy=args.strategy, num_nodes=args.num_nodes, progress=not args.no_progress,
                   max_steps=args.max_steps, evaluate=not args.no_test)
    if result.generator_path is None:  # a DDP rank other than 0: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        m = result.metrics
        print(f"generator: {result.generator_path}")
        for k in ("target_accuracy", "clean_target_accuracy", "aux_accuracy", "ssim", "train_images_per_second"):
            if m.get(k) is not None:
                print(f"  {k:24s} {m[k]:.4f}")
    return 0


def cmd_matrix(args) -> int:
    import json

    from photoveil.generator_training.matrix import run_matrix, summary

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    base = _config(args, archs[0] if archs else "", None)
    _check_archs(archs, base.task)
    if base.task != "classification":
        from photoveil.errors import InvalidInput

        raise InvalidInput("matrix evaluates classifiers; use a classification --dataset (e.g. fashion-mnist)")
    if len(archs) < 2:
        from photoveil.errors import InvalidInput

        raise InvalidInput(f"--archs needs >= 2 distinct zoo archs, got {args.archs!r}")
    records = run_matrix(archs, args.out, base, baseline=not args.no_baseline, accelerator=args.accelerator,
                         devices=_devices(args.devices), strategy=args.strategy, progress=not args.no_progress)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generator matrix ({args.out})")
    for col in ("target", "aux", "target acc", "clean acc", "aux acc", "|SSIM|"):
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in records:
        table.add_row(r["target"], r["aux"] or "(none)", fmt(r["target_accuracy"]),
                      fmt(r["clean_target_accuracy"]), fmt(r["aux_accuracy"]), fmt(r["ssim"]))
    console = Console()
    console.print(table)
    console.print(summary(records))
    return 0


def cmd_test(args) -> int:
    from photoveil.generator_training.testing import main

    return main(args)
