"""The models a server hosts, by id: full forward, split halves, kind and version.

A hosted model is a ``torch.nn.Module`` taking ``[N,3,H,W]`` RGB in [0,1] at its input
size. Classification models return logits ``[N,C]``; embedding models return vectors
that the host L2-normalises. A model may publish split points: ``(shallow, rest)``
pairs with ``rest(shallow(x)) == model(x)``; the phone runs ``shallow`` and
``RecognizeFeatures`` runs ``rest`` here.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import re
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput, NotFound
from photoveil.labels import DATASET_CLASSES

log = logging.getLogger("photoveil.server")
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FULL = "full"  # the stage name of a whole-model forward


@dataclass(frozen=True)
class BatchKey:
    """Which requests may share one forward pass: same model, same stage, same item shape
    (so their items concatenate along the batch dimension)."""

    model_id: str
    stage: str                      # FULL or a split point (then the model's second half runs)
    item_shape: tuple[int, ...]     # one item's shape, without the batch dimension


class ModelKind(str, Enum):
    CLASSIFICATION = "classification"
    EMBEDDING = "embedding"


@dataclass
class HostedModel:
    model_id: str
    module: nn.Module
    kind: ModelKind
    input_size: tuple[int, int]
    version: str
    splits: dict[str, tuple[nn.Module, nn.Module]] = field(default_factory=dict)
    feature_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    verify_threshold: float = 0.5

    def split(self, point: str) -> tuple[nn.Module, nn.Module]:
        try:
            return self.splits[point]
        except KeyError:
            published = ", ".join(sorted(self.splits)) or "none"
            raise NotFound(f"model {self.model_id!r} has no split point {point!r}; published: {published}") from None

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def weights_version(module: nn.Module) -> str:
    """A content hash of the parameters and buffers: changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


class ModelHost:
    """Registered models plus the forward function the batcher calls."""

    def __init__(self, num_threads: int | None = None):
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self._models: dict[str, HostedModel] = {}
        self._lock = threading.Lock()
        self.forward_calls = 0  # batched forward passes run (tests and stats)

    def register(self, model_id: str, module: nn.Module, *, kind: ModelKind | str,
                 input_size: int | tuple[int, int], version: str | None = None,
                 splits: Mapping[str, tuple[nn.Module, nn.Module]] | None = None,
                 labels: Iterable[str] | None = None, verify_threshold: float = 0.5) -> HostedModel:
        if not MODEL_ID.match(model_id):
            raise ValueError(f"model id {model_id!r} must match {MODEL_ID.pattern}")
        if model_id in self._models:
            raise ValueError(f"model id {model_id!r} is already registered")
        kind = ModelKind(kind)
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
        if len(size) != 2 or min(size) < 1 or max(size) > 4096:
            raise ValueError(f"input_size must be H or (H, W) in 1..4096, got {input_size}")
        if not -1.0 < verify_threshold <= 1.0:
            raise ValueError(f"verify_threshold must be in (-1, 1], got {verify_threshold}")
        module.eval()
        hosted = HostedModel(model_id, module, kind, size, version or weights_version(module),
                             labels=list(labels or []), verify_threshold=float(verify_threshold))
        probe = torch.zeros(1, 3, *size)
        with torch.inference_mode():
            width = module(probe).flatten(1).shape[1]
            if kind is ModelKind.CLASSIFICATION and hosted.labels and len(hosted.labels) != width:
                raise ValueError(f"{len(hosted.labels)} labels for a model with {width} outputs")
            for point, (shallow, rest) in (splits or {}).items():
                shallow.eval(), rest.eval()
                hosted.splits[point] = (shallow, rest)
                hosted.feature_shapes[point] = tuple(shallow(probe).shape[1:])
        with self._lock:
            self._models[model_id] = hosted
        log.info("hosting %s (%s, %dx%d, %s, splits: %s)", model_id, kind.value, *size, hosted.version,
                 ", ".join(hosted.splits) or "none")
        return hosted

    def get(self, model_id: str) -> HostedModel:
        try:
            return self._models[model_id]
        except KeyError:
            hosted = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"unknown model {model_id[:80]!r}; this server hosts: {hosted}") from None

    def models(self) -> list[HostedModel]:
        return [self._models[k] for k in sorted(self._models)]

    def run(self, key: BatchKey, batch: torch.Tensor) -> torch.Tensor:
        """The batcher's forward function: ``batch`` through ``key.model_id`` at ``key.stage``."""
        hosted = self.get(key.model_id)
        module = hosted.module if key.stage == FULL else hosted.split(key.stage)[1]
        with torch.inference_mode():
            out = module(batch).float().flatten(1)
        with self._lock:
            self.forward_calls += 1
        if hosted.kind is ModelKind.EMBEDDING:
            out = F.normalize(out, dim=1)
        if not bool(torch.isfinite(out).all()):
            raise InvalidInput(f"model {key.model_id!r} produced NaN/Inf for this input; check its value range")
        return out

    # -- constructors over the project's model collections (imported lazily) ---------

    @classmethod
    def from_registry(cls, names: Iterable[str] | Mapping[str, str], host: "ModelHost | None" = None,
                      verify_threshold: float = 0.5) -> "ModelHost":
        """Face recognizers from ``photoveil.facemodels.registry`` (split at their published points).

        ``names``: registry names (hosted under the same id) or a mapping model id -> name.
        Only role ``recognizer`` models (embeddings) can be hosted.
        """
        registry = _optional("photoveil.facemodels.registry", "face models")
        host = host or cls()
        for model_id, name in _pairs(names):
            net = registry.load(name)
            spec = net.spec
            if getattr(spec, "role", "recognizer") != "recognizer":
                raise InvalidInput(f"face model {name!r} is a {spec.role}; the server hosts recognizers")
            splits = {point: net.split(point) for point in getattr(spec, "split_points", {}) or {}}
            # The npm package@version pins the weights; fall back to a hash of them.
            version = getattr(spec, "version", None) or getattr(spec, "package", None)
            host.register(model_id, net, kind=ModelKind.EMBEDDING, input_size=tuple(spec.input_size),
                          version=version, splits=splits, verify_threshold=verify_threshold)
        return host

    @classmethod
    def from_zoo(cls, archs: Iterable[str] | Mapping[str, str], host: "ModelHost | None" = None) -> "ModelHost":
        """Trained zoo classifiers via ``photoveil.zoo.checkpoints.load_trained``.

        Names are ``arch`` (Fashion-MNIST) or ``dataset/arch`` (e.g. ``cifar10/resnet18``);
        ids as in :meth:`from_registry`. One-channel models get an RGB -> gray front.
        """
        checkpoints = _optional("photoveil.zoo.checkpoints", "zoo classifiers")
        host = host or cls()
        for model_id, name in _pairs(archs):
            dataset, _, arch = name.rpartition("/")
            dataset = dataset or "fashion-mnist"
            module = checkpoints.load_trained(arch, dataset)
            first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
            if first_conv is not None and first_conv.in_channels == 1:
                module = nn.Sequential(RgbToGray(), module)
            # Labels are cosmetic (indices still work): imagefolder models go without.
            labels = DATASET_CLASSES.get(dataset)
            host.register(model_id, module, kind=ModelKind.CLASSIFICATION, input_size=32, labels=labels)
        return host


class RgbToGray(nn.Module):
    """[N,3,H,W] RGB -> [N,1,H,W] luma (ITU-R BT.601), for one-channel classifiers."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weights).sum(dim=1, keepdim=True)


def _optional(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise NotFound(f"{what} are not available in this installation ({module} is missing)") from None
        raise


def _pairs(names: Iterable[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    return list(names.items()) if isinstance(names, Mapping) else [(n, n) for n in names]
