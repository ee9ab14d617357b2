"""Registry of the published face networks photoveil uses, and their loader.

Every model is described by a :class:`FaceModelSpec` and loaded by :func:`load` as a
:class:`~photoveil.facemodels.facenet.FaceNet` that takes ``[N,3,H,W]`` RGB in ``[0,1]`` at
``spec.input_size`` (the wrapper applies the network's own normalisation).

Outputs:

* recognizers -> embedding ``[N, D]`` (not L2-normalised; compare with cosine similarity).
* ``gear`` -> ``{"age": [N,7], "gender": [N,2], "race": [N,5]}`` softmax probabilities,
  label order in ``spec.labels``.
* ``emotion`` -> ``{"emotion": [N,7]}`` softmax probabilities (``spec.labels``).
* ``blazeface`` -> ``{"scores": [N,896,1] logits, "regressors": [N,896,16]}``, see
  :func:`blazeface_anchors` for the decoding.
* ``facemesh`` -> ``{"mesh": [N,468,3], "face_prob": [N,1]}``.

Each model is one registry entry: its spec (with its named split points and default split)
and the builder that turns the pulled files into a ``FaceNet``, declared together with
:func:`register_face_model`. :func:`load` looks the entry up, checks the models are pulled
and calls the builder.

The networks come from two MIT-licensed npm packages (see ``packages.py``) that
``photoveil models pull`` downloads into ``<cache>/models``; the graph files are imported
at load time (a few hundred ms), so the cache holds the publisher's files byte for byte.
Torch and the importers are only imported by the builders, so listing the registry is cheap.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from photoveil.errors import ModelsMissing, NotFound
from photoveil.facemodels.packages import FACE_API, HUMAN_MODELS, package_of
from photoveil.facemodels.spec import ROLES, FaceModelSpec
from photoveil.paths import ASSETS, models_pulled, models_root

if TYPE_CHECKING:
    from photoveil.facemodels.facenet import FaceNet

__all__ = ["ROLES", "FaceModelSpec", "FaceModelEntry", "register_face_model", "get_spec", "list_specs",
           "get_entry", "load", "lfw_accuracy", "blazeface_anchors"]

LFW_ACCURACY_FILE = ASSETS / "lfw_accuracy.json"

# builder(spec, model_file, *, repair_fused_prelu=False) -> FaceNet; model_file is the
# pulled path of spec.files[0] (the model.json / weights manifest).
Builder = Callable[..., "FaceNet"]


@dataclass(frozen=True)
class FaceModelEntry:
    """One registered model: its spec and the function that builds it from the pulled files."""

    spec: FaceModelSpec
    builder: Builder

    def build(self, root: Path, **options):
        """The ``FaceNet`` from the models root ``root`` (``<cache>/models``)."""
        model_file = root / package_of(self.spec.package).key / self.spec.files[0]
        return self.builder(self.spec, model_file, **options)


_ENTRIES: dict[str, FaceModelEntry] = {}


def register_face_model(spec: FaceModelSpec) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as the loader of ``spec`` (entries keep their order)."""
    if spec.role not in ROLES:
        raise ValueError(f"{spec.name}: role {spec.role!r} is not one of {ROLES}")
    if spec.split_points and spec.default_split not in spec.split_points:
        raise ValueError(f"{spec.name}: default_split {spec.default_split!r} is not a split point")

    def wrap(builder: Builder) -> Builder:
        if spec.name in _ENTRIES:
            raise ValueError(f"face model {spec.name!r} is registered twice")
        _ENTRIES[spec.name] = FaceModelEntry(spec, builder)
        return builder
    return wrap


def _hm(name: str) -> tuple[str, ...]:
    return (f"models/{name}.json", f"models/{name}.bin")


def _graph_recognizer(spec: FaceModelSpec, model_file: Path, outputs, repair_fused_prelu: bool):
    """A recognizer imported from a TF.js graph, fed 0..255 in the spec's channel order."""
    from torch import nn

    from photoveil.facemodels.facenet import Affine, FaceNet, rgb_to_bgr
    from photoveil.tfjs.graph import load_graph_model

    body = load_graph_model(model_file, outputs=outputs, repair_fused_prelu=repair_fused_prelu)
    pre = rgb_to_bgr(255.0) if spec.channel_order == "BGR" else Affine(255.0, 0.0)
    return FaceNet(spec, pre, body, nn.Identity())


# ------------------------------------------------------------------------------ entries
@register_face_model(FaceModelSpec(
    name="faceapi-resnet34", role="recognizer", package=FACE_API.spec,
    files=("model/face_recognition_model-weights_manifest.json", "model/face_recognition_model.bin"),
    input_size=(150, 150), channel_order="RGB", input_range="0..255",
    normalisation="(255x - [122.782, 117.001, 104.298]) / 255, folded into the stem conv",
    output="128-d face descriptor", output_size=128,
    split_points={"stem": 1, "pool": 2, "block1": 3, "block2": 4, "block3": 5, "down64": 6, "block64_3": 9},
    default_split="block2", deep_split="block64_3",
    architecture="ResNet-34 (dlib face recognition model v1, face-api port), 29 conv layers",
    notes="uint8-quantised weights. Split 'block3' = first conv + max-pool + 3 residual blocks."))
def _faceapi_resnet34(spec: FaceModelSpec, model_file: Path, **_):
    from torch import nn

    from photoveil.facemodels.faceapi_resnet34 import FaceApiResNet34
    from photoveil.facemodels.facenet import FaceNet

    return FaceNet(spec, nn.Identity(), FaceApiResNet34.from_manifest(model_file), nn.Identity())


# the HSE FaceRes MobileNet of human-models, in its two published weight sets
_FACERES = dict(role="recognizer", package=HUMAN_MODELS.spec, input_size=(224, 224), channel_order="BGR",
                input_range="0..255", normalisation="RGB -> BGR, x * 255",
                output="1024-d descriptor (global_pooling/Mean; the age/gender heads are dropped)",
                output_size=1024, default_split="block2",
                split_points={"stem": 3, "block1": 9, "block2": 15, "block3": 21, "block5": 33, "block11": 69})


@register_face_model(FaceModelSpec(
    name="faceres", files=_hm("faceres"), **_FACERES,
    # deep: PMT matched at block2-5 re-grows the face under the noise (mobileface still
    # verifies 0.52-0.82 of pairs); block11 brings it to 0.08 (README, "Reconstruction")
    deep_split="block11",
    architecture="MobileNet-v1 (HSE FaceRes), float16 weights",
    notes="trained on OpenCV (BGR) images: on 300 LFW pairs of identities outside pairs.txt, "
          "BGR input verifies at 0.961 vs 0.924 for RGB (no flip), so the wrapper swaps channels."))
def _faceres(spec: FaceModelSpec, model_file: Path, *, repair_fused_prelu: bool = False, **_):
    return _graph_recognizer(spec, model_file, ["global_pooling/Mean"], repair_fused_prelu)


register_face_model(FaceModelSpec(
    name="faceres-deep", files=_hm("faceres-deep"), **_FACERES,
    architecture="MobileNet-v1 (HSE FaceRes, the float32 'deep' release), float32 weights",
    notes="faceres's architecture with other weights (every tensor differs from faceres's by "
          "up to 40 % of its range). No protection method, preset or generator was tuned against it: "
          "it is the held-out recognizer of `evaluate` and the demo. On 300 LFW pairs (seed 1) BGR "
          "input verifies at 0.954 vs 0.914 for RGB, so the wrapper swaps channels."))(_faceres)


@register_face_model(FaceModelSpec(
    name="mobileface", role="recognizer", package=HUMAN_MODELS.spec, files=_hm("mobileface"),
    input_size=(112, 112), channel_order="RGB", input_range="0..255",
    normalisation="x * 255 (the graph then does (x - 127.5) / 128)",
    output="256-d embedding", output_size=256,
    split_points={"stem": 8, "unit1": 15, "stage1": 28, "stage2": 48, "stage3": 68, "stage4": 88},
    default_split="stage1",
    architecture="InsightFace MobileFace (PReLU MobileNet)"))
def _mobileface(spec: FaceModelSpec, model_file: Path, *, repair_fused_prelu: bool = False, **_):
    return _graph_recognizer(spec, model_file, None, repair_fused_prelu)


@register_face_model(FaceModelSpec(
    name="mobilefacenet", role="recognizer", package=HUMAN_MODELS.spec, files=_hm("mobilefacenet"),
    input_size=(112, 112), channel_order="RGB", input_range="0..255", normalisation="x * 255",
    output="192-d embedding (the graph L2-normalises it)", output_size=192,
    split_points={"stem": 6, "dwconv": 11, "stage2": 76, "stage3": 88, "stage4": 166, "stage5": 178,
                  "stage6": 204},
    default_split="stage2",
    architecture="MobileFaceNet (becauseofAI MobileFace)",
    notes="WEAK: the published graph fuses a Relu into 17 depthwise convs whose outputs also feed a "
          "decomposed PReLU (Abs/Sub/Mul), so the negative branch is always 0 (ReLU instead of PReLU); "
          "the TF.js runtime itself computes this (checked against @tensorflow/tfjs 4.22). Embeddings "
          "nearly collapse (mean cosine same 0.99 vs different 0.99 on LFW centre crops). Tried, 400 "
          "pairs, crop 100-120 px: 0..255 input 0.66, [0,1] 0.65, [-1,1] 0.62; restoring the PReLUs "
          "(load(..., repair_fused_prelu=True)) 0.61-0.65. Nothing recovers it."))
def _mobilefacenet(spec: FaceModelSpec, model_file: Path, *, repair_fused_prelu: bool = False, **_):
    return _graph_recognizer(spec, model_file, None, repair_fused_prelu)


@register_face_model(FaceModelSpec(
    name="gear", role="attribute", package=HUMAN_MODELS.spec, files=_hm("gear"),
    input_size=(198, 198), channel_order="RGB", input_range="0..1", normalisation="none",
    output="age (7 bins), gender (2), race (5) softmax probabilities",
    output_size={"age": 7, "gender": 2, "race": 5},
    split_points={"stem": 5, "block2": 9, "block3": 13, "block4": 17, "block5": 21},
    default_split="block2",
    architecture="GEAR predictor CNN (Keras), float16 weights",
    labels={"age": ("<=20", "21-25", "26-30", "31-40", "41-50", "51-60", ">60"),
            "gender": ("male", "female"), "race": ("white", "black", "asian", "indian", "other")},
    notes="wants a tight face crop (human crops the face box to [top 0, left 0.1, bottom 0.9, "
          "right 0.9]); on LFW centre crops of 110 px, P(male) averaged 0.90 for 12 images of 4 men "
          "and 0.34 for 12 images of 4 women (loose 150 px crops: 0.92 vs 0.57)."))
def _gear(spec: FaceModelSpec, model_file: Path, **_):
    from torch import nn

    from photoveil.facemodels.facenet import FaceNet, NamedOutputs
    from photoveil.tfjs.graph import load_graph_model

    body = load_graph_model(model_file, outputs=["Identity", "Identity_1", "Identity_2"])
    return FaceNet(spec, nn.Identity(), body, NamedOutputs(("age", "gender", "race")))


@register_face_model(FaceModelSpec(
    name="emotion", role="attribute", package=HUMAN_MODELS.spec, files=_hm("emotion"),
    input_size=(64, 64), channel_order="grayscale (from RGB)", input_range="-1..1",
    normalisation="gray = 0.2989 R + 0.587 G + 0.114 B; (gray - 0.5) * 2",
    output="emotion softmax probabilities", output_size={"emotion": 7},
    split_points={"block1": 2, "res1": 9, "res2": 17},
    default_split="res1",
    architecture="mini-Xception (oarriaga face_classification)",
    labels={"emotion": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")}))
def _emotion(spec: FaceModelSpec, model_file: Path, **_):
    from photoveil.facemodels.facenet import FaceNet, Grayscale, NamedOutputs
    from photoveil.tfjs.graph import load_graph_model

    return FaceNet(spec, Grayscale(2.0, -1.0), load_graph_model(model_file), NamedOutputs(("emotion",)))


@register_face_model(FaceModelSpec(
    name="blazeface", role="detector", package=HUMAN_MODELS.spec, files=_hm("blazeface"),
    input_size=(256, 256), channel_order="RGB", input_range="-1..1", normalisation="x * 2 - 1",
    output="scores [N,896,1] logits; regressors [N,896,16]: (cx, cy, w, h) then 6 keypoints (x, y), "
           "in input pixels relative to the anchor centre (see blazeface_anchors)",
    output_size={"scores": 896, "regressors": 896 * 16},
    architecture="BlazeFace (back-camera 256x256 variant)",
    labels={"keypoints": ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")},
    notes="keypoint names from the subject's point of view (MediaPipe order)."))
def _blazeface(spec: FaceModelSpec, model_file: Path, **_):
    from photoveil.facemodels.facenet import Affine, BlazeFaceHead, FaceNet
    from photoveil.tfjs.graph import load_graph_model

    body = load_graph_model(model_file, outputs=["Identity", "Identity_2", "Identity_1", "Identity_3"])
    return FaceNet(spec, Affine(2.0, -1.0), body, BlazeFaceHead())


@register_face_model(FaceModelSpec(
    name="facemesh", role="landmarks", package=HUMAN_MODELS.spec, files=_hm("facemesh"),
    input_size=(192, 192), channel_order="RGB", input_range="0..1", normalisation="none",
    output="mesh [N,468,3] (x, y in input pixels, z relative) and face_prob [N,1]",
    output_size={"mesh": 468 * 3, "face_prob": 1},
    architecture="MediaPipe FaceMesh, float16 weights",
    notes="expects a face crop (e.g. a blazeface box enlarged 1.5x)."))
def _facemesh(spec: FaceModelSpec, model_file: Path, **_):
    from torch import nn

    from photoveil.facemodels.facenet import FaceNet, NamedOutputs
    from photoveil.tfjs.graph import load_graph_model

    body = load_graph_model(model_file, outputs=["Identity_2", "Identity_1"])
    return FaceNet(spec, nn.Identity(), body, NamedOutputs(("mesh", "face_prob"), {"mesh": (468, 3)}))


# ------------------------------------------------------------------------------ lookup
def list_specs() -> list[FaceModelSpec]:
    return [e.spec for e in _ENTRIES.values()]


def get_entry(name: str) -> FaceModelEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise NotFound(f"unknown face model {name!r}; known: {', '.join(_ENTRIES)}") from None


def get_spec(name: str) -> FaceModelSpec:
    return get_entry(name).spec


def lfw_accuracy() -> dict[str, dict]:
    """Measured LFW verification figures per recognizer (written by ``photoveil models eval``)."""
    try:
        return json.loads(LFW_ACCURACY_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def blazeface_anchors(size: int = 256):
    """Anchor centres ``[896, 2]`` (x, y in input pixels) in the order of ``scores``.

    Decode anchor ``i``: centre ``(cx, cy) = anchors[i] + reg[i, 0:2]``, size
    ``reg[i, 2:4]``, keypoint ``k`` at ``anchors[i] + reg[i, 4+2k : 6+2k]`` (all in pixels
    of the ``size`` x ``size`` input), confidence ``sigmoid(scores[i])``.
    """
    import torch

    out = []
    for stride, per_cell in ((size // 16, 2), (size // 8, 6)):
        grid = -(-size // stride)
        for gy in range(grid):
            for gx in range(grid):
                out += [[stride * (gx + 0.5), stride * (gy + 0.5)]] * per_cell
    return torch.tensor(out, dtype=torch.float32)


def load(name: str, cache_dir: str | os.PathLike | None = None, *, repair_fused_prelu: bool = False):
    """Load model ``name`` from the pulled cache as a frozen, eval-mode ``FaceNet``.

    ``repair_fused_prelu`` only matters for ``mobilefacenet``: it restores the PReLUs that
    the published graph lost (a deviation from the TF.js behaviour, see the spec's notes).
    Raises :class:`ModelsMissing` when ``photoveil models pull`` has not been run.
    """
    entry = get_entry(name)
    root = models_root(cache_dir)
    if not models_pulled(cache_dir):
        raise ModelsMissing(f"face models are not in {root}; run `photoveil models pull` "
                            f"(or pass the --cache-dir / $PHOTOVEIL_CACHE you pulled them into)")
    return entry.build(root, repair_fused_prelu=repair_fused_prelu)
