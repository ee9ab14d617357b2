"""``public-shallow``: a back half trained by the attacker on the published shallow model.

The PMT upload is built so that ``E_c(x~) ~ E_c(x)``, and ``E_c`` is public (it is inside
every phone's artifact). The attacker therefore freezes the published ``E_c`` — loaded from
the **signed artifact** (:class:`ArtifactShallow`: the signature is verified with the
provider's public key, then the ExecuTorch program computes the features), not from the
provider's model registry — and trains its own back half (:class:`BackHead`, a small
ResNet-style head, CosFace margin loss, Lightning) on ``E_c(x)`` of its own labelled faces
(identities disjoint from the evaluated ones). It then reads every protected upload:

* ``upload_mode`` ``image``: the uploaded (8-bit) image through the public ``E_c``;
* ``upload_mode`` ``features`` (PMT): the uploaded features themselves; when the upload point
  is shallower than the matched split (the ``high`` preset uploads ``stem``), the attacker
  runs the remaining layers up to the split — they are in the published step program, so
  this is what a party holding the artifact can do (computed here with the same weights
  eagerly).

For FMD the same attacker reads FMD's feature layer (the authorized model's split point whose
features FMD distorts); for the generator, the authorized model's default split.

With the run's models injected (tests), ``E_c`` is the injected model's shallow half (no
artifact export); :func:`publish_shallow` + :class:`ArtifactShallow` are tested separately.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput, NotFound
from photoveil.evaluation.attacks import adaptive_base as B

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext

HEAD_FORMAT = "photoveil-adaptive-head/1"


# ------------------------------------------------------------------------------ E_c
class ArtifactShallow:
    """``E_c`` as the attacker holds it: a signed ``shallow`` artifact folder.

    The signature is verified against ``public_key`` (``IntegrityError`` otherwise) before
    the program is loaded; ``features(images)`` runs it in program-sized batches.
    """

    def __init__(self, folder: str | Path, public_key: str | Path):
        from photoveil.client.runtime import PteShallow
        from photoveil.signing import verify_artifact

        self.folder = Path(folder)
        self.manifest = verify_artifact(self.folder, public_key)
        if self.manifest.kind != "shallow":
            raise InvalidInput(f"{self.folder} is a {self.manifest.kind!r} artifact; the public-shallow attacker "
                               "needs a 'shallow' program")
        self.program = PteShallow(self.folder)
        self.split = self.manifest.split
        self.id = f"{self.manifest.model_id}@{self.split}:{self.manifest.sha256[:16]}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.program.features(images.float())


class EagerShallow:
    """``E_c`` of an in-process FaceNet (only for injected test models)."""

    def __init__(self, net, split: str, size: tuple[int, int]):
        from photoveil.client.protect.shallow import from_facenet
        from photoveil.imageops import ResizeTo, input_hw

        self.shallow = from_facenet(net, [split]).eval()
        self.front = ResizeTo(input_hw(net))
        self.split = split
        self.id = f"eager:{net.spec.name}@{split}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.shallow.upload_features(self.front(c)) for c in images.split(32)])


def publish_shallow(net, split: str, folder: Path, size: tuple[int, int], batch: int = 16) -> tuple[Path, Path]:
    """The provider's side: export ``E_c`` (``net`` cut at ``split``) as a ``shallow`` program,
    sign it with a fresh key; returns (artifact folder, public key). Reused when present."""
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program
    from photoveil.signing import keygen, sign_artifact

    folder = Path(folder)
    art, key = folder / "shallow", folder / "provider"
    pub = key.with_name(key.name + ".pub")
    if (art / "model.sig").is_file() and pub.is_file():
        return art, pub
    prog = P.shallow_program(net, split, size, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_program(prog.module, prog.inputs, prog.options, art)
    priv, pub = keygen(key, overwrite=True)
    sign_artifact(art, priv)
    return art, pub


def public_shallow(ctx: RunContext, split: str):
    """The attacker's ``E_c`` at ``split`` of the (first) authorized model: the signed
    artifact given by ``--adaptive-artifact`` / ``--adaptive-public-key``, else one published
    (exported + signed) into the adaptive cache; eager for injected test models."""
    cfg, prot = ctx.cfg, ctx.protection
    name = prot.setting[0]
    net = ctx.model(name)
    if cfg.adaptive_artifact:
        src = ArtifactShallow(cfg.adaptive_artifact, cfg.adaptive_public_key)
        if src.split != split:
            raise InvalidInput(f"--adaptive-artifact is cut at {src.split!r}; this protection matches {split!r}")
        return src
    if ctx.models.injected:
        return EagerShallow(net, split, prot.size)
    folder = B.cache_root(ctx) / "published" / f"{name}-{split}-{prot.size[0]}"
    art, pub = publish_shallow(net, split, folder, prot.size)
    return ArtifactShallow(art, pub)


# ------------------------------------------------------------------------------ the head
@dataclass
class HeadConfig:
    """Back half on ``E_c`` features ``[in_channels, feature_hw, feature_hw]``."""

    in_channels: int
    feature_hw: int
    width: int = 32
    embedding: int = 128
    dropout: float = 0.2

    def __post_init__(self):
        for name, v, lo in (("in_channels", self.in_channels, 1), ("feature_hw", self.feature_hw, 1),
                            ("width", self.width, 4), ("embedding", self.embedding, 8)):
            if not isinstance(v, int) or v < lo:
                raise InvalidInput(f"head {name} must be an int >= {lo}, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInput(f"head dropout must be in [0, 1), got {self.dropout}")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class BackHead(nn.Module):
    """Stem conv, stride-2 residual blocks down to <= 5x5, then BN-Dropout-FC-BN to the
    embedding (the ArcFace output layer)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        w, hw = config.width, config.feature_hw
        stride = 2 if hw >= 24 else 1
        layers = [nn.Conv2d(config.in_channels, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        hw = (hw + stride - 1) // stride
        c = w
        while hw > 5 and len(layers) < 3 + 3:
            layers.append(BasicBlock(c, min(4 * w, 2 * c), 2))
            c, hw = min(4 * w, 2 * c), (hw + 1) // 2
        if len(layers) == 3:
            layers.append(BasicBlock(c, c, 1))
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.BatchNorm2d(c), nn.Dropout(config.dropout), nn.Flatten(),
                                 nn.Linear(c * hw * hw, config.embedding), nn.BatchNorm1d(config.embedding))

    def forward(self, z):
        return self.out(self.body(z))


class CosFace(nn.Module):
    """Large-margin cosine loss (CosFace, s = 30, m = 0.35) over ``classes`` identities."""

    def __init__(self, embedding: int, classes: int, s: float = 30.0, m: float = 0.35):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, embedding) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.weight))
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.s * (cos - self.m * onehot), labels)


def fit(model: nn.Module, loss: nn.Module, data: torch.utils.data.Dataset, epochs: int, lr: float,
        batch_size: int = 64, seed: int = 0, progress: bool = False, weight_decay: float = 5e-4,
        step_fn=None) -> float:
    """Train ``model`` (+ ``loss``'s parameters) with Lightning on the CPU; returns seconds.

    ``step_fn(model, loss, batch)`` gives the loss of a batch (default: ``loss(model(x), y)``)."""
    import lightning as L

    step_fn = step_fn or (lambda m, lo, b: lo(m(b[0]), b[1]))

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.loss = model, loss

        def training_step(self, batch, _):
            value = step_fn(self.model, self.loss, batch)
            self.log("loss", value, prog_bar=True, on_step=True, on_epoch=False)
            return value

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))]

    from photoveil.evaluation.reconstruction import fit_cpu

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    fit_cpu(Module(), data, epochs, batch_size, seed, progress)
    model.eval()
    return time.perf_counter() - t0


def train_head(features: torch.Tensor, labels: torch.Tensor, epochs: int, width: int = 32, seed: int = 0,
               lr: float = 2e-3, progress: bool = False) -> tuple[BackHead, float]:
    """A :class:`BackHead` trained with CosFace on ``features [N,C,h,w]`` / ``labels [N]``."""
    if len(features) != len(labels) or len(features) < 2:
        raise InvalidInput(f"head training needs >= 2 labelled features, got {len(features)} / {len(labels)}")
    torch.manual_seed(seed)
    head = BackHead(HeadConfig(int(features.shape[1]), int(features.shape[-1]), width))
    loss = CosFace(head.config.embedding, int(labels.max()) + 1)
    data = torch.utils.data.TensorDataset(features.float(), labels.long())
    wall = fit(head, loss, data, epochs, lr, seed=seed, progress=progress)
    return head.eval(), wall


def save_head(path: Path, head: BackHead, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": HEAD_FORMAT, "config": asdict(head.config), "meta": meta,
                "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}}, path)


def load_head(path: Path) -> tuple[BackHead, dict]:
    """A :func:`save_head` checkpoint, loaded with ``weights_only=True``."""
    if not Path(path).is_file():
        raise NotFound(f"head checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != HEAD_FORMAT:
        raise InvalidInput(f"{str(path)!r} is not a photoveil adaptive head ({HEAD_FORMAT})")
    head = BackHead(HeadConfig(**ckpt["config"]))
    head.load_state_dict(ckpt["state_dict"])
    return head.eval(), dict(ckpt.get("meta") or {})


def head_embed(head: BackHead, z: torch.Tensor) -> torch.Tensor:
    head.eval()
    with torch.no_grad():
        return torch.cat([head(c.float()) for c in z.split(256)])


# ------------------------------------------------------------------------------ the attack
def attacked_split(ctx: RunContext) -> str:
    """The split point whose features the protection leaves near the clean ones (PMT: the
    matched split; FMD: its distorted feature layer; otherwise the default split)."""
    net = ctx.model(ctx.protection.setting[0])
    split = ctx.protection.params.get("split") or ctx.cfg.overrides.get("split")
    if ctx.cfg.method == "fmd":
        from photoveil.client.protect.fmd import feature_layer

        return feature_layer(net.spec, split)
    return net.spec.split_point(split)


class PublicShallow(B.AdaptiveAttacker):
    name = "public-shallow"
    methods = ("pmt", "fmd", "generator", "none")

    def features(self, ctx: RunContext, src, paths: list[Path]) -> torch.Tensor:
        """``E_c`` of the attacker's clean faces, cached on disk by artifact id (fp16)."""
        file = B.cache_root(ctx) / f"features-{B.digest(src.id, ctx.protection.size, ctx.cfg.alignment)}.pt"
        table = B.load_table(file)
        missing = [p for p in dict.fromkeys(str(p) for p in paths) if p not in table]
        for s in range(0, len(missing), 256):
            chunk = missing[s:s + 256]
            x = ctx.faces.get([Path(p) for p in chunk], ctx.protection.size, model=ctx.protection.setting[0])
            for p, z in zip(chunk, src.features(x)):
                table[p] = z.half()
        if missing:
            B.save_table(file, table)
        return torch.stack([table[str(p)] for p in paths]).float()

    def head(self, ctx: RunContext, src, data: B.AttackerData) -> tuple[BackHead, float, bool]:
        """The attacker's head at one budget (trained, or loaded from the cache)."""
        cfg = ctx.cfg
        key = B.digest(src.id, [str(p) for p in data.paths], cfg.adaptive_epochs, cfg.adaptive_head_width, cfg.seed)
        file = B.cache_root(ctx) / f"head-{key}.pt"
        if file.is_file():
            head, meta = load_head(file)
            return head, float(meta.get("wall_s", 0.0)), True
        z = self.features(ctx, src, data.paths)
        head, wall = train_head(z, torch.tensor(data.labels), cfg.adaptive_epochs, cfg.adaptive_head_width,
                                seed=cfg.seed, progress=cfg.progress)
        save_head(file, head, wall_s=wall, images=data.n_images, identities=len(data.identities), artifact=src.id)
        return head, wall, False

    def uploads(self, ctx: RunContext, src, split: str) -> dict[str, dict[str, torch.Tensor]]:
        """``{upload_mode: {path: E_c-level features of the protected upload}}``."""
        prot = ctx.protection
        paths = list(prot.uploads)
        images = torch.stack([prot.uploads[p] for p in paths])
        modes = {"image": dict(zip(paths, src.features(B.quantize(images))))}
        protector = prot.protector
        if ctx.cfg.method == "pmt" and hasattr(protector, "features_of"):
            from photoveil.client.protect.shallow import ShallowModel, from_facenet

            up = protector.features_of(images)          # what the features upload carries
            point = prot.params.get("upload") or split
            if point != split:                        # the rest of E_c, from the published weights
                net = ctx.model(prot.setting[0])
                taps = from_facenet(net, [point, split])
                if type(taps) is not ShallowModel:
                    return modes                      # no clean segment to continue from
                with torch.no_grad():
                    up = torch.cat([taps.segments[1](c) for c in up.split(32)])
            modes["features"] = dict(zip(paths, up))
        return modes

    def run(self, ctx: RunContext) -> list[dict]:
        cfg, prot = ctx.cfg, ctx.protection
        split = attacked_split(ctx)
        src = public_shallow(ctx, split)
        pool = B.pool_for(ctx)
        clean_paths = list(ctx.data.all_paths)
        x_clean = ctx.faces.get(clean_paths, prot.size, model=prot.setting[0])
        z_clean = src.features(x_clean)
        modes = self.uploads(ctx, src, split)
        out = []
        for budget in cfg.adaptive_budgets:
            data = pool.budget(budget)
            head, wall, cached = self.head(ctx, src, data)
            calib = lambda ps: dict(zip(map(str, ps), head_embed(head, self.features(ctx, src, list(ps)))))  # noqa: E731
            thr, calib_acc = B.calibrate_threshold(calib, data.calib_pairs)
            clean = dict(zip(map(str, clean_paths), head_embed(head, z_clean)))
            bud = B.Budget(data.n_images, len(data.identities), cfg.adaptive_epochs, wall)
            model = f"public-shallow-head@{split}"
            extra = {"split": split, "artifact": src.id, "budget": budget or "all", "head_cached": cached}
            for mode, z in modes.items():
                prot_emb = dict(zip(z, head_embed(head, torch.stack(list(z.values())))))
                scores = B.score(ctx, clean, prot_emb, thr)
                if mode != "image":  # the clean rows do not depend on the upload mode
                    scores = {k: v for k, v in scores.items() if not k.startswith("clean_")}
                out += B.records(ctx, self.name, model, scores, bud, thr, mode, **extra)
            out += B.records(ctx, self.name, model, {"attacker_calibration_accuracy": (calib_acc, len(data.calib_pairs))},
                             bud, thr, "image", **extra)
        return out


ATTACKER = PublicShallow
__all__ = ["ATTACKER", "ArtifactShallow", "BackHead", "CosFace", "EagerShallow", "HeadConfig", "PublicShallow",
           "attacked_split", "fit", "load_head", "publish_shallow", "public_shallow", "save_head", "train_head"]
