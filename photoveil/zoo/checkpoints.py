"""Zoo checkpoints: save (fp16), load (``weights_only=True``), list, evaluate.

A checkpoint is ``{"config": asdict(ZooTrainConfig)`` (:mod:`photoveil.zoo.config`), "state_dict": {name: tensor},
"metrics": {"test_accuracy": float, ...}}``. Floating-point weights are stored as float16
(half the size; the accuracy change is measured by ``photoveil zoo report``, which
re-evaluates the loaded fp32 model) and restored to float32 on load. Shipped checkpoints
live in ``photoveil/assets/zoo/<dataset>/<arch>.pt``.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from photoveil.errors import InvalidInput, NotFound
from photoveil.paths import ASSETS

SHIPPED_DIR = ASSETS / "zoo"


def save_checkpoint(path: str | Path, config, model: torch.nn.Module, metrics: dict) -> Path:
    """Write ``{"config", "state_dict" (fp16 floats), "metrics"}`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"config": asdict(config), "state_dict": state, "metrics": dict(metrics)}, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"config", "state_dict", "metrics"} <= ckpt.keys():
        raise InvalidInput(f"{path} is not a zoo checkpoint (needs keys config, state_dict, metrics)")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the model of a checkpoint dict (fp32, eval mode)."""
    from photoveil.zoo.config import ZooTrainConfig  # imports the datasets module: only when needed

    known = {f.name for f in fields(ZooTrainConfig)}
    config = ZooTrainConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    model = config.build_model()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return model.eval()


def list_trained(root: str | Path | None = None) -> list[dict]:
    """``[{"arch", "dataset", "path", "config", "metrics"}]`` for every checkpoint under ``root``
    (default: the shipped ones), sorted by dataset then arch."""
    root = Path(root) if root else SHIPPED_DIR
    out = []
    for p in sorted(root.glob("*/*.pt")):
        ckpt = read_checkpoint(p)
        out.append({"arch": ckpt["config"]["arch"], "dataset": ckpt["config"]["dataset"], "path": str(p),
                    "config": ckpt["config"], "metrics": ckpt["metrics"]})
    return out


def load_trained(arch: str, dataset: str = "fashion-mnist", path: str | Path | None = None) -> torch.nn.Module:
    """A trained zoo classifier in eval mode: the shipped ``<dataset>/<arch>.pt`` or ``path``.

    Input ``(N, C, 32, 32)`` in [0, 1]; output logits. Raises :class:`NotFound` naming the
    shipped checkpoints when there is none for ``arch``/``dataset``.
    """
    if path is None:
        path = SHIPPED_DIR / dataset / f"{arch}.pt"
        if not path.is_file():
            shipped = ", ".join(f"{p.parent.name}/{p.stem}" for p in sorted(SHIPPED_DIR.glob("*/*.pt"))) or "none"
            raise NotFound(f"no shipped checkpoint for arch {arch!r} on {dataset!r}; shipped: {shipped}")
    ckpt = read_checkpoint(path)
    if ckpt["config"]["arch"] != arch or ckpt["config"]["dataset"] != dataset:
        raise InvalidInput(f"{path} holds {ckpt['config']['arch']} on {ckpt['config']['dataset']}, "
                           f"not {arch} on {dataset}")
    return model_from_checkpoint(ckpt)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, batch_size: int = 500, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) over all of ``dataset``."""
    from tqdm import tqdm

    model.eval()
    correct = total = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, y in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise InvalidInput("cannot evaluate on an empty dataset")
    return correct / total
