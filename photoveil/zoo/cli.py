"""``photoveil zoo train|report``: train zoo classifiers and report their measured test accuracy."""
from __future__ import annotations

import argparse

from photoveil.errors import InvalidInput

# Duplicated from registry/data (cheap constants) so --help needs no torch import.
ARCH_CHOICES = ("vgg13_bn", "vgg16_bn", "resnet18", "resnet34", "densenet121", "mobilenet_v2", "googlenet",
                "inception_v3")
DATASET_CHOICES = ("fashion-mnist", "cifar10", "imagefolder")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _devices(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--devices takes 'auto' or a number, got {text!r}") from None


def register(sub) -> None:
    parser = sub.add_parser("zoo", help="classifier zoo: train classifiers, report their test accuracy")
    zsub = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    zsub.required = True

    t = zsub.add_parser("train", help="train one architecture (PyTorch Lightning; CPU, GPU or DDP)",
                        description="Train a zoo classifier and write <out>/<dataset>/<arch>.pt "
                                    "with its config and full-test-set accuracy.")
    t.add_argument("--arch", required=True, choices=ARCH_CHOICES)
    t.add_argument("--dataset", default="fashion-mnist", choices=DATASET_CHOICES)
    t.add_argument("--data-root", default=None, help="dataset folder (required for cifar10/imagefolder)")
    t.add_argument("--width", type=float, default=0.25, help="channel multiplier in [0.0625, 4] (default 0.25)")
    t.add_argument("--epochs", type=_positive_int, default=3)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1 sgd, 0.003 adamw)")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    t.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    t.add_argument("--crop-padding", type=int, default=2, help="random-crop shift in pixels, 0 = off (default 2)")
    t.add_argument("--no-hflip", action="store_true", help="no random horizontal flips")
    t.add_argument("--subset", type=_positive_int, default=None, help="use only N training images")
    t.add_argument("--val-size", type=int, default=5000, help="images held out for validation (default 5000)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-from", default=None, help="continue training from this checkpoint's weights")
    t.add_argument("--out", default="zoo_runs", help="output folder (default ./zoo_runs)")
    t.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    t.add_argument("--devices", type=_devices, default="auto", help="Lightning devices: auto or a count")
    t.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ...")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    t.set_defaults(func=_train)

    r = zsub.add_parser("report", help="evaluate every trained checkpoint on its full test set",
                        description="Load each checkpoint (default: the shipped ones) and measure its "
                                    "clean test accuracy now.")
    r.add_argument("--dir", default=None, help="checkpoint root holding <dataset>/<arch>.pt (default: shipped)")
    r.add_argument("--data-root", default=None, help="dataset folder for cifar10/imagefolder checkpoints")
    r.add_argument("--limit", type=_positive_int, default=None, help="evaluate on the first N test images only")
    r.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    r.set_defaults(func=_report)


def _train(args) -> int:
    import logging

    from photoveil.zoo.config import ZooTrainConfig
    from photoveil.zoo.train import train

    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "sgd" else 3e-3)
    try:
        config = ZooTrainConfig(arch=args.arch, dataset=args.dataset, width=args.width, epochs=args.epochs,
                                batch_size=args.batch_size, optimizer=args.optimizer, lr=lr, schedule=args.schedule,
                                val_size=args.val_size, subset=args.subset, seed=args.seed, data_root=args.data_root,
                                crop_padding=args.crop_padding, hflip=not args.no_hflip, init_from=args.init_from)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    path = train(config, args.out, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
                 progress=not args.no_progress)
    logging.getLogger("photoveil.zoo").info("wrote %s", path)
    return 0


def report_records(root=None, data_root=None, limit: int | None = None, progress: bool = False) -> list[dict]:
    """One record per checkpoint with its accuracy measured now on the (full or first ``limit``) test set."""
    from torch.utils.data import Subset

    from photoveil.data.classification import load_classification
    from photoveil.zoo.checkpoints import evaluate, list_trained, model_from_checkpoint, read_checkpoint

    records, test_sets = [], {}
    for entry in list_trained(root):
        ckpt = read_checkpoint(entry["path"])
        cfg = ckpt["config"]
        if cfg["dataset"] not in test_sets:
            ds = load_classification(cfg["dataset"], "test", data_root or cfg.get("data_root"))
            test_sets[cfg["dataset"]] = Subset(ds, range(min(limit, len(ds)))) if limit else ds
        test = test_sets[cfg["dataset"]]
        model = model_from_checkpoint(ckpt)
        m = ckpt["metrics"]
        records.append({
            "arch": cfg["arch"], "dataset": cfg["dataset"],
            "test_accuracy": round(evaluate(model, test, progress=progress), 4), "test_images": len(test),
            "width": cfg["width"], "params": sum(p.numel() for p in model.parameters()),
            "epochs": cfg["epochs"] + cfg.get("prior_epochs", 0),
            "trained_test_accuracy": m.get("test_accuracy"), "train_seconds": m.get("train_seconds"),
            "train_images_per_second": m.get("train_images_per_second"), "path": entry["path"],
        })
    return records


def _report(args) -> int:
    import json

    import torch

    torch.set_grad_enabled(False)
    records = report_records(args.dir, args.data_root, args.limit, progress=not args.json)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="photoveil classifier zoo (accuracy measured now)")
    for col in ("arch", "dataset", "test acc", "test imgs", "width", "params", "epochs", "train s", "img/s"):
        table.add_column(col, justify="left" if col in ("arch", "dataset") else "right")
    for r in records:
        table.add_row(r["arch"], r["dataset"], f"{r['test_accuracy']:.4f}", str(r["test_images"]), f"{r['width']:g}",
                      f"{r['params']:,}", str(r["epochs"]), str(r["train_seconds"]), str(r["train_images_per_second"]))
    if not records:
        print("no trained checkpoints found")
    else:
        Console().print(table)
    return 0
