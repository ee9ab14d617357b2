"""How far a face generator moves the authorized (target) embedding, plainly and centred on the
mean face, on the validation faces ``photoveil generator train`` holds out (docs/methods.md,
``--w-target-centred``).

    python tools/target_drift.py face runs/face-q2.pt --out runs/target-drift.json

Per checkpoint: the plain cosine of T(x') to T(x) (mean, minimum), the mean cosine of T(x') to
the other people's clean embeddings (clean: T(x) to them), each face's cosine to the mean face
(clean and protected), and the cosine centred on the mean face (mean, minimum). Unit
embeddings; the mean face is the mean over the validation faces. Prints a markdown table and
writes the numbers as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def drift(checkpoint: str, x: torch.Tensor, y: torch.Tensor, embed) -> dict[str, float]:
    from photoveil.generator_training.module import resolve_generator_path
    from photoveil.nets.unet import load_generator

    net, _ = load_generator(resolve_generator_path(checkpoint))
    net.eval()
    with torch.no_grad():
        e, ep = embed(x), embed(net.protect(x, 1.0))
    others = y[:, None] != y[None, :]
    mu = e.mean(0)
    centred = F.cosine_similarity(ep - mu, e - mu, dim=1)
    plain = (e * ep).sum(1)
    unit_mu = F.normalize(mu, dim=0)
    return {"plain_cos": plain.mean().item(), "plain_cos_min": plain.min().item(),
            "others_cos_clean": (e @ e.T)[others].mean().item(), "others_cos": (ep @ e.T)[others].mean().item(),
            "mean_face_cos_clean": (e @ unit_mu).mean().item(), "mean_face_cos": (ep @ unit_mu).mean().item(),
            "centred_cos": centred.mean().item(), "centred_cos_min": centred.min().item()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="shipped generator names or checkpoint paths")
    p.add_argument("--target", default="faceapi-resnet34", help="authorized recognizer [faceapi-resnet34]")
    p.add_argument("--val-size", type=int, default=64, help="validation faces, as in training [64]")
    p.add_argument("--image-size", type=int, default=150, help="face size, as in training [150]")
    p.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = p.parse_args(argv)

    from photoveil.generator_training.config import GeneratorTrainConfig
    from photoveil.generator_training.datamodule import load_face_splits
    from photoveil.generator_training.module import critic_input, freeze, load_critic

    cfg = GeneratorTrainConfig(task="face", dataset="lfw", in_channels=3, target=args.target, aux=None,
                               val_size=args.val_size, image_size=args.image_size)
    val = load_face_splits(cfg)[1]
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([int(val[i][1]) for i in range(len(val))])
    target = freeze(load_critic(cfg, args.target))

    def embed(images):
        return F.normalize(target(critic_input(target, images)).float(), dim=1)

    results = {c: drift(c, x, y, embed) for c in args.checkpoints}
    keys = list(next(iter(results.values())))
    print("| checkpoint | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for c, r in results.items():
        print(f"| {c} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    if args.out:
        args.out.write_text(json.dumps({"faces": len(x), "target": args.target, "results": results}, indent=2))


if __name__ == "__main__":
    main()
