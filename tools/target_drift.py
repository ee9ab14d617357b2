"""How far a face generator moves the authorized (target) embedding, plainly and centred on the
mean face (docs/methods.md, ``--w-target-centred``), and whether a provider's linear map could
undo it.

    python tools/target_drift.py face runs/face-q2.pt --adapter-faces 1200 --out runs/target-drift.json

Faces: a seeded ``--faces`` of the held-out LFW identities (the test split of
``photoveil generator train``, on which no generator is trained). Per checkpoint: the plain
cosine of T(x') to T(x) (mean, minimum), the mean cosine of T(x') to the other people's clean
embeddings (clean: T(x) to them), each face's cosine to the mean face (clean and protected),
and the cosine centred on the mean face (mean, minimum). With ``--adapter-faces N``, also the
centred cosine after a ridge-regression affine map from protected to clean embeddings fitted
on N training faces — what a provider who holds the generator could fit server-side. Unit
embeddings; the mean face is the mean over the measured faces. Prints a markdown table and
writes the numbers as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

RIDGE = 1e-2  # the adapter's ridge penalty (unit embeddings; 1e-3 to 1e-1 give the same within 0.003)


def load_faces(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(faces [N, 3, H, W], labels [N]) of every item of ``ds``."""
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([f for f, _ in items]), torch.tensor([int(label) for _, label in items])


@torch.no_grad()
def embed_all(embed, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``embed`` of ``x`` in batches of ``batch``."""
    return torch.cat([embed(x[i:i + batch]) for i in range(0, len(x), batch)])


def fit_adapter(ep: torch.Tensor, e: torch.Tensor):
    """Ridge affine map protected -> clean; returns a function of protected embeddings."""
    def design(z):
        return torch.cat([z, torch.ones(len(z), 1)], dim=1)

    a = design(ep)
    w = torch.linalg.solve(a.T @ a + RIDGE * torch.eye(a.shape[1]), a.T @ e)
    return lambda z: F.normalize(design(z) @ w, dim=1)


def drift(e: torch.Tensor, ep: torch.Tensor, y: torch.Tensor, adapter=None) -> dict[str, float]:
    others = y[:, None] != y[None, :]
    mu = e.mean(0)
    centred = F.cosine_similarity(ep - mu, e - mu, dim=1)
    plain = (e * ep).sum(1)
    unit_mu = F.normalize(mu, dim=0)
    out = {"plain_cos": plain.mean().item(), "plain_cos_min": plain.min().item(),
           "others_cos_clean": (e @ e.T)[others].mean().item(), "others_cos": (ep @ e.T)[others].mean().item(),
           "mean_face_cos_clean": (e @ unit_mu).mean().item(), "mean_face_cos": (ep @ unit_mu).mean().item(),
           "centred_cos": centred.mean().item(), "centred_cos_min": centred.min().item()}
    if adapter is not None:
        out["adapted_centred_cos"] = F.cosine_similarity(adapter(ep) - mu, e - mu, dim=1).mean().item()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="shipped generator names or checkpoint paths")
    p.add_argument("--target", default="faceapi-resnet34", help="authorized recognizer [faceapi-resnet34]")
    p.add_argument("--faces", type=int, default=500, help="held-out faces measured [500]")
    p.add_argument("--adapter-faces", type=int, default=0,
                   help="training faces to fit the protected->clean map on; 0 = no adapter [0]")
    p.add_argument("--image-size", type=int, default=150, help="face size, as in training [150]")
    p.add_argument("--seed", type=int, default=0, help="draws the faces [0]")
    p.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = p.parse_args(argv)
    if args.faces < 2 or args.adapter_faces < 0:
        p.error(f"--faces must be >= 2 and --adapter-faces >= 0, got {args.faces} and {args.adapter_faces}")

    from photoveil.generator_training.config import GeneratorTrainConfig
    from photoveil.generator_training.datamodule import load_face_splits, seeded_subset
    from photoveil.generator_training.module import critic_input, freeze, load_critic, resolve_generator_path
    from photoveil.nets.unet import load_generator

    cfg = GeneratorTrainConfig(task="face", dataset="lfw", in_channels=3, target=args.target, aux=None,
                               image_size=args.image_size)
    fit, _, held_out = load_face_splits(cfg)
    x, y = load_faces(seeded_subset(held_out, min(args.faces, len(held_out)), args.seed))
    x_fit = load_faces(seeded_subset(fit, min(args.adapter_faces, len(fit)), args.seed))[0] \
        if args.adapter_faces else None
    target = freeze(load_critic(cfg, args.target))

    def embed(images):
        return F.normalize(target(critic_input(target, images)).float(), dim=1)

    e = embed_all(embed, x)  # the clean embeddings do not depend on the generator: once
    e_fit = embed_all(embed, x_fit) if x_fit is not None else None
    results = {}
    for c in args.checkpoints:
        net, _ = load_generator(resolve_generator_path(c))
        net.eval()

        def embed_protected(images, net=net):
            return embed(net.protect(images, 1.0))

        adapter = fit_adapter(embed_all(embed_protected, x_fit), e_fit) if x_fit is not None else None
        results[c] = drift(e, embed_all(embed_protected, x), y, adapter=adapter)
    keys = list(next(iter(results.values())))
    print("| checkpoint | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for c, r in results.items():
        print(f"| {c} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    if args.out:
        args.out.write_text(json.dumps({"faces": len(x), "adapter_faces": 0 if x_fit is None else len(x_fit),
                                        "target": args.target, "seed": args.seed, "results": results}, indent=2))


if __name__ == "__main__":
    main()
