"""``photoveil evaluate``: measure a protection method with the attacks of the PMT / FMD papers.

Examples::

    photoveil evaluate --method pmt --authorized faceapi-resnet34 --identities 20 --pairs 60
    photoveil evaluate --method pmt --sweep steps=25,50,100 --attacks abuse
    photoveil evaluate --method fmd --eps 16 --attacks abuse,robustness --json
    photoveil evaluate --data ~/Pictures/people --method pmt      # your own photos: DIR/<person>/<photo>

Writes ``results.json`` (records), ``config.json``, ``results.md`` and plots under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from photoveil.client.protect.configs import CONFIGS
from photoveil.client.protect.flags import add_method_flags, add_preset_flag, method_overrides, preset_arg
from photoveil.errors import InvalidInput

PROTECTION_METHODS = tuple(CONFIGS)
from photoveil.evaluation.attacks import ADAPTIVE_ATTACKERS
from photoveil.evaluation.attacks import ATTACKS as ATTACK_CHOICES
from photoveil.evaluation.attacks import DEFAULT_ATTACKS



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="measure a protection method (data abuse, attributes, reconstruction, robustness)",
        description="Protect a seeded subset of test identities and measure the protection: Eq. 10 strict "
                    "accuracy and top-1 on every recognizer, attribute CosSim, Level-1/2 reconstruction, SSIM/PSNR/UP, "
                    "robustness to server transforms, and an optional hyper-parameter sweep.",
    )
    p.add_argument("--method", choices=("pmt", "fmd", "generator", "none"), default="pmt")
    p.add_argument("--authorized", action="append", metavar="NAME",
                   help="authorized recognizer (repeat for MR-PMT; default faceapi-resnet34)")
    p.add_argument("--separately", action="store_true",
                   help="several --authorized: one protector per model (rows of the Table-7 matrix) instead of MR-PMT")
    p.add_argument("--evaluated", default="all",
                   help="comma-separated recognizers / attribute models to evaluate (default: all)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="your own labelled photos, DIR/<person>/<photo> (>= 2 people with >= 2 photos each; full "
                        "photos are oriented and their largest face found as `protect` does; the report says in "
                        "plain words which recognizers still recognise each person). Default: the shared LFW")
    p.add_argument("--faces", choices=("auto", "photos", "frames"), default="auto",
                   help="photos: find each face as `protect` does (full photos); frames: pre-cropped LFW-style "
                        "frames (BlazeFace, centre crop where none is found); auto: photos for a --data folder "
                        "without pairs.txt, frames otherwise (default)")
    p.add_argument("--identities", type=int, default=20, help="test identities (seeded subset; default 20)")
    p.add_argument("--identity-split", choices=("all", "heldout"), default="all",
                   help="heldout: draw test identities only from the 20%% that generator training holds out")
    p.add_argument("--images-per-identity", type=int, default=4, help="images per test identity (default 4)")
    p.add_argument("--pairs", type=int, default=60, help="verification pairs among them (half same; default 60)")
    add_preset_flag(p, allow_none=True)
    add_method_flags(p, PROTECTION_METHODS)
    p.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="privacy/utility curve along one hyper-parameter, e.g. steps=25,50,100 or init_sigma=40,60,80")
    p.add_argument("--attacks", default=None,
                   help=f"comma-separated subset of {','.join(ATTACK_CHOICES)} (image metrics always run; default "
                        f"all but adaptive, or abuse,attributes on your own photos)")
    p.add_argument("--transforms", default=None,
                   help="robustness transforms (default all: jpeg95,jpeg75,jpeg50,down0.5,blur1)")
    p.add_argument("--kappa", type=float, default=0.2, help="Eq. 10 similarity threshold (default 0.2)")
    p.add_argument("--calib-pairs", type=int, default=100,
                   help="clean pairs of train identities calibrating a per-model threshold, reported as "
                        "strict_accuracy_cal next to the paper's fixed kappa (0 = off; default 100)")
    p.add_argument("--up-sigma", type=float, default=0.1, help="UP environmental noise std in [0,1] units")
    p.add_argument("--up-kappa", type=float, default=0.3, help="UP similarity threshold")
    p.add_argument("--alignment", choices=("landmarks", "center", "none"), default="landmarks")
    g = p.add_argument_group("reconstruction attacks")
    g.add_argument("--recon-train-images", type=int, default=1000, help="Level-1 training images (train identities)")
    g.add_argument("--recon-test-images", type=int, default=16, help="test images reconstructed per feature kind")
    g.add_argument("--recon-epochs", type=int, default=30, help="Level-1 decoder epochs")
    g.add_argument("--recon-width", type=int, default=32, help="Level-1 decoder width")
    g.add_argument("--invert-steps", type=int, default=200, help="Level-2 inversion steps")
    g.add_argument("--invert-alpha", type=float, default=4.0, help="Level-2 initial step (0-255 units)")
    g.add_argument("--invert-tv", type=float, default=0.05, help="Level-2 TV weight")
    a = p.add_argument_group("adaptive attackers (--attacks adaptive)")
    a.add_argument("--adaptive-attackers", default=",".join(ADAPTIVE_ATTACKERS),
                   help=f"comma-separated subset of {','.join(ADAPTIVE_ATTACKERS)} (default: all)")
    a.add_argument("--adaptive-budgets", default="500,2000,0",
                   help="public-shallow attacker images, one head each (0 = every attacker identity; default "
                        "500,2000,0)")
    a.add_argument("--adaptive-epochs", type=int, default=8, help="public-shallow head epochs (default 8)")
    a.add_argument("--adaptive-protect-budgets", default="32,96",
                   help="robust-training / purifier: attacker images protected with the public protector "
                        "(default 32,96)")
    a.add_argument("--adaptive-recognizer", default="mobileface",
                   help="robust-training: the unauthorized recognizer fine-tuned (default mobileface)")
    a.add_argument("--adaptive-finetune-epochs", type=int, default=4)
    a.add_argument("--adaptive-purifier-epochs", type=int, default=15)
    a.add_argument("--adaptive-artifact", default=None,
                   help="signed 'shallow' artifact folder the public-shallow attacker loads (default: export and "
                        "sign one into the cache, as the provider publishes it)")
    a.add_argument("--adaptive-public-key", default=None, help="the provider's public key for --adaptive-artifact")
    a.add_argument("--adaptive-cache", default="runs/adaptive-cache",
                   help="attacker features, heads, protected attacker images (default runs/adaptive-cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--cache-dir", default=None, help="face-model cache (default: $PHOTOVEIL_CACHE or the user cache)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/eval-METHOD-TIMESTAMP)")
    p.add_argument("--json", action="store_true", help="print the records as JSON to stdout")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=main)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _csv(text))
    except ValueError:
        raise InvalidInput(f"{flag} takes comma-separated integers, got {text!r}") from None


def config_from_args(args: argparse.Namespace):
    from photoveil.evaluation.config import EvalConfig, parse_sweep

    if args.method == "none":  # the unprotected baseline takes no method settings
        given = [m for m in PROTECTION_METHODS if method_overrides(args, m, (m,))]
        if given:
            raise InvalidInput(f"--method none takes no protection settings (given: {', '.join(given)} flags)")
        overrides = {}
    else:  # bad settings fail here, before any data or model loads
        from photoveil.client.protect.factory import build_config

        overrides = method_overrides(args, args.method, PROTECTION_METHODS)
        build_config(args.method, preset_arg(args), overrides)
    evaluated = _csv(args.evaluated)
    probe = EvalConfig(method=args.method, data=str(args.data) if args.data else None, alignment=args.alignment,
                       faces=args.faces)
    attacks = _csv(args.attacks) if args.attacks is not None else (
        ("abuse", "attributes") if probe.uses_photos else DEFAULT_ATTACKS)
    if args.data:  # a cheap look at the file names, before any model loads
        if probe.uses_photos:
            from photoveil.evaluation.photos import list_photos

            list_photos(args.data)
        else:
            from photoveil.data.faces import scan_identity_folder

            scan_identity_folder(args.data)
    return EvalConfig(
        method=args.method, faces=args.faces, authorized=tuple(args.authorized or ("faceapi-resnet34",)),
        evaluated=None if evaluated in ((), ("all",)) else evaluated, separately=args.separately,
        data=str(args.data) if args.data else None, identities=args.identities, identity_split=args.identity_split,
        images_per_identity=args.images_per_identity, pairs=args.pairs,
        preset=preset_arg(args), overrides=overrides,
        sweep=parse_sweep(args.sweep, args.method) if args.sweep else None,
        attacks=attacks, **({"transforms": _csv(args.transforms)} if args.transforms else {}),
        kappa=args.kappa, calib_pairs=args.calib_pairs, up_sigma=args.up_sigma, up_kappa=args.up_kappa, alignment=args.alignment,
        recon_train_images=args.recon_train_images, recon_test_images=args.recon_test_images,
        recon_epochs=args.recon_epochs, recon_width=args.recon_width, invert_steps=args.invert_steps,
        invert_alpha=args.invert_alpha, invert_tv=args.invert_tv, seed=args.seed, cache_dir=args.cache_dir,
        adaptive_attackers=_csv(args.adaptive_attackers),
        adaptive_budgets=_ints(args.adaptive_budgets, "--adaptive-budgets"), adaptive_epochs=args.adaptive_epochs,
        adaptive_protect_budgets=_ints(args.adaptive_protect_budgets, "--adaptive-protect-budgets"),
        adaptive_recognizer=args.adaptive_recognizer, adaptive_finetune_epochs=args.adaptive_finetune_epochs,
        adaptive_purifier_epochs=args.adaptive_purifier_epochs, adaptive_artifact=args.adaptive_artifact,
        adaptive_public_key=args.adaptive_public_key, adaptive_cache=args.adaptive_cache,
        progress=args.progress,
    )


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    import torch

    from photoveil.evaluation.runner import Evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / f"eval-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    ev = Evaluation(cfg)
    records = ev.run(out)
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        sys.stdout.write("\n")
    if cfg.data and not args.json:
        from photoveil.evaluation.plain import plain_lines

        print("\n".join(plain_lines(cfg, records, ev.extras)))
    print(f"evaluate: {len(records)} records, {ev.timings.get('total_s', 0):.0f} s -> {out}/results.json, "
          f"results.md", file=sys.stderr)
    return 0
