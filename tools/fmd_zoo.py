"""FMD in the paper's own setting: closed-set classifiers of one task, one of them authorized,
the others unauthorized black boxes (Chai et al., Table 1: six torchvision classifiers).

Here the six shipped Fashion-MNIST zoo classifiers (``photoveil/assets/zoo``), on a fixed
subset of the test split (Debian's ``dataset-fashion-mnist``). For every authorized arch and
its feature layer, eps 8 and 16, and two settings — ``paper`` (``fmd.PAPER``: 100 steps of
alpha = eps/4, MSE, lambda 1) and ``default`` (``FMDConfig()``: 12 steps, nmse, embedding
term, momentum, TI kernel) — it records every model's accuracy on the protected images and
the SSIM (7x7 window: the images are 32x32). It tells whether FMD's reported transfer is a
property of the method or of the setting: if FMD transferred here as in the paper, the gap on
faces would be the face recognizers'.

    python tools/fmd_zoo.py --images 500 --out runs/fmd-zoo        # -> fmd-zoo.json, fmd-zoo.md

Writes a record per (authorized, setting, eps) as it goes (``fmd-zoo.json``), then the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from photoveil.client.protect.fmd import PAPER, FMDConfig, FMDProtector, LayerTap
from photoveil.data.classification import fixed_subset, load_classification
from photoveil.zoo.checkpoints import load_trained

LAYERS = {"googlenet": "body.4", "mobilenet_v2": "body.6", "resnet18": "layer2", "resnet34": "layer2",
          "vgg13_bn": "body.6", "vgg16_bn": "body.6"}
"""A middle block of each arch (the paper's best VGG16 layer is its 7th of 13 conv layers)."""


def settings(eps: float) -> dict[str, dict]:
    return {"paper": {**PAPER, "eps": eps, "alpha": eps / 4},
            "default": {"eps": eps, "alpha": FMDConfig().alpha * eps / FMDConfig().eps}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500, help="test images (fixed subset, seed 0)")
    ap.add_argument("--authorized", default=",".join(LAYERS), help="comma-separated authorized archs")
    ap.add_argument("--layer", action="append", default=[], help="ARCH=MODULE overriding LAYERS")
    ap.add_argument("--eps", default="8,16")
    ap.add_argument("--settings", default="paper,default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from pytorch_msssim import ssim

    layers = dict(LAYERS, **dict(s.split("=", 1) for s in a.layer))
    models = {arch: load_trained(arch) for arch in LAYERS}
    data = fixed_subset(load_classification("fashion-mnist", "test"), a.images, seed=0)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])

    def accuracy(z):
        with torch.no_grad():
            return {arch: round((m(z).argmax(1) == y).float().mean().item(), 4) for arch, m in models.items()}

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    clean = accuracy(x)
    records = []
    for auth in a.authorized.split(","):
        for eps in map(float, a.eps.split(",")):
            for name in a.settings.split(","):
                t0 = time.time()
                cfg = FMDConfig(seed=0, batch_size=250, **settings(eps)[name])
                z = FMDProtector(LayerTap(models[auth], layers[auth]), cfg, in_channels=1).protect(x)
                acc = accuracy(z)
                unauth = [v for arch, v in acc.items() if arch != auth]
                records.append({"authorized": auth, "layer": layers[auth], "setting": name, "eps": eps,
                                "accuracy": acc, "clean_accuracy": clean,
                                "mean_unauthorized": round(sum(unauth) / len(unauth), 4),
                                "clean_mean_unauthorized": round(sum(v for k, v in clean.items() if k != auth)
                                                                 / len(unauth), 4),
                                "ssim": round(ssim(x, z, data_range=1.0, win_size=7).item(), 4),
                                "images": len(y), "seconds": round(time.time() - t0, 1)})
                print(json.dumps(records[-1]), flush=True)
                (out / "fmd-zoo.json").write_text(json.dumps(records, indent=1))
    lines = ["| authorized (layer) | setting | eps | authorized acc (clean) | mean unauthorized (clean) | "
             "per unauthorized | SSIM |", "|---|---|---|---|---|---|---|"]
    for r in records:
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["accuracy"].items() if k != r["authorized"])
        lines.append(f"| {r['authorized']} ({r['layer']}) | {r['setting']} | {r['eps']:g} | "
                     f"{r['accuracy'][r['authorized']]:.3f} ({clean[r['authorized']]:.3f}) | "
                     f"**{r['mean_unauthorized']:.3f}** ({r['clean_mean_unauthorized']:.3f}) | {per} | {r['ssim']:.3f} |")
    (out / "fmd-zoo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
