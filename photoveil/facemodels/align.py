"""Face alignment: similarity transform onto a 5-point template, warped with torch.

``landmarks`` alignment (the ArcFace / InsightFace recipe, Deng et al., CVPR 2019):
BlazeFace's eye, nose and mouth keypoints are mapped by the least-squares similarity
transform (Umeyama, TPAMI 1991) onto the standard ArcFace 112x112 template, scaled to
the recognizer's input size. BlazeFace has one mouth point, so the template's two mouth
corners are replaced by their midpoint. :data:`MODEL_TEMPLATE` picks the template per
model: face-api's ResNet-34 is a port of dlib's recognizer, trained on dlib's face
chips, whose geometry differs from ArcFace's (eyes higher, tighter), so a dlib-chip
template is provided too.

Two fallbacks without a detector: ``center`` takes a plain centre crop sized for LFW
deep-funneled 250x250 images (the face fills the middle), ``none`` only resizes.

Coordinates are in pixels with pixel centres at integers (the OpenCV convention the
ArcFace template uses).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from photoveil.errors import InvalidInput, NotFound
from photoveil.imageops import resize_to

ALIGNMENTS = ("landmarks", "center", "none")

# ArcFace 112x112 template: subject's right eye (image left), left eye, nose tip,
# right and left mouth corners.
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

# The same template with the mouth corners merged: BlazeFace's 4 usable points
# (right eye, left eye, nose tip, mouth centre), in BlazeFace keypoint order.
BLAZEFACE_TEMPLATE_112 = np.concatenate(
    [ARCFACE_TEMPLATE_112[:3], ARCFACE_TEMPLATE_112[3:].mean(axis=0, keepdims=True)])

# dlib's face chip (get_face_chip_details, padding 0.25), which face-api's ResNet-34
# (a port of dlib_face_recognition_resnet_model_v1) was trained on: dlib's mean face
# shape (landmarks 17-67, unit square) at the BlazeFace points (eye centres = mean of
# the 6 eye landmarks, nose tip = 30, mouth centre = mean of inner lip 60-67), mapped
# by (v + 0.25) / 1.5 and expressed at 112 px like the ArcFace template.
_DLIB_UNIT = np.array([
    [0.225492, 0.215990],
    [0.754762, 0.215990],
    [0.490127, 0.515625],
    [0.490127, 0.799073],
])
DLIB_TEMPLATE_112 = (_DLIB_UNIT + 0.25) / 1.5 * 112.0 - 0.5

TEMPLATES = {"arcface": BLAZEFACE_TEMPLATE_112, "dlib": DLIB_TEMPLATE_112}

# Per-model template and zoom about the crop centre (< 1: more context around the
# face), chosen on LFW pairs disjoint from pairs.txt (see lfw_eval.py). Models not
# listed use the ArcFace template at zoom 1.
# faceapi-resnet34 on 400 such pairs: arcface 0.9125 (zoom 1; 0.8/0.9/1.1 worse),
# dlib 0.985 (zoom 1; 0.9: 0.9725).
MODEL_TEMPLATE: dict[str, tuple[str, float]] = {"faceapi-resnet34": ("dlib", 1.0)}

# Side of the centre crop as a fraction of a 250x250 LFW deep-funneled image. Over 300
# LFW photos BlazeFace finds the eyes 43.5 px apart and 48 px above the mouth; the
# template has 35.2 and 40.7 px at 112, so its 112 px span ~135 px = 0.54 of 250.
CENTER_CROP_FRACTION = 0.54

ImageLike = Union[str, os.PathLike, "PIL.Image.Image", torch.Tensor, np.ndarray]  # noqa: F821


def template(size: int, zoom: float = 1.0, kind: str = "arcface") -> np.ndarray:
    """BlazeFace-order template points ``[4, 2]`` for a ``size`` x ``size`` crop: the 112
    template ``kind`` (arcface | dlib) scaled, then zoomed by ``zoom`` about the centre."""
    if kind not in TEMPLATES:
        raise ValueError(f"template kind must be one of {', '.join(TEMPLATES)}, got {kind!r}")
    points = TEMPLATES[kind]
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if not 0.2 <= zoom <= 5.0:
        raise ValueError(f"zoom must be in [0.2, 5], got {zoom}")
    # Scale about pixel-centre coordinates: 112 px -> size px.
    scaled = (points + 0.5) * (size / 112.0) - 0.5
    centre = (size - 1) / 2.0
    return (scaled - centre) * zoom + centre


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform ``dst ~ s R src + t`` (Umeyama 1991).

    ``src``, ``dst``: ``[K, 2]`` point sets (K >= 2). Returns the ``[2, 3]`` matrix
    ``[sR | t]`` mapping source to destination coordinates.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # keep a rotation, not a reflection
    rot = u @ sign @ vt
    var_s = (sc ** 2).sum() / len(src)
    scale = (d * np.diag(sign)).sum() / var_s if estimate_scale else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise InvalidInput("degenerate landmarks: all points coincide")
    t = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, t[:, None]], axis=1)


def warp_affine(image: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """Warp ``image`` ``[3, H, W]`` (or a batch ``[N, 3, H, W]``, every image by the same
    ``matrix``) with the ``[2, 3]`` source->output pixel ``matrix`` into a ``[3, size, size]``
    crop (``[N, 3, size, size]``; bilinear, zeros outside the image; differentiable)."""
    h, w = image.shape[-2:]
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]  # output pixel -> source pixel
    # Fold the pixel<->normalised conversions (align_corners=False) into one affine map
    # from normalised output coordinates to normalised source coordinates.
    to_pix = np.array([[size / 2.0, 0, size / 2.0 - 0.5], [0, size / 2.0, size / 2.0 - 0.5], [0, 0, 1]])
    to_norm = np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]])
    theta = (to_norm @ np.vstack([inv, [0, 0, 1]]) @ to_pix)[:2]
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    theta_t = torch.as_tensor(theta, dtype=torch.float32, device=image.device).expand(len(batch), 2, 3)
    grid = F.affine_grid(theta_t, [len(batch), batch.shape[1], size, size], align_corners=False)
    out = F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.clamp(0.0, 1.0)
    return out if image.ndim == 4 else out[0]


def landmark_matrix(keypoints: np.ndarray, size: int, zoom: float = 1.0,
                    kind: str = "arcface") -> np.ndarray:
    """Similarity matrix taking BlazeFace's eyes/nose/mouth (first 4 of its 6
    keypoints, ``[>=4, 2]`` pixels) onto the ``kind`` template for a ``size`` crop."""
    kp = np.asarray(keypoints, dtype=np.float64)[:4]
    return umeyama(kp, template(size, zoom, kind))


def model_template(model: str | None) -> tuple[str, float]:
    """(template kind, zoom) used for recognizer ``model``."""
    return MODEL_TEMPLATE.get(model, ("arcface", 1.0)) if model else ("arcface", 1.0)


def realign(images: torch.Tensor, src_model: str | None, dst_model: str | None, size: int) -> torch.Tensor:
    """Faces ``[N, 3, H, H]`` aligned for ``src_model`` re-cropped onto ``dst_model``'s
    template at ``size`` x ``size``: what ``dst_model``'s own aligner crops from the same
    photo (exact template-to-template similarity, so it favours the re-aligner: no landmark
    error), with zeros where the destination crop reaches past the source crop. Identity
    geometry (same template) only resizes. An unauthorized recognizer that receives an
    upload aligned for another model re-aligns it before reading it: dlib-chip crops read
    by an ArcFace-template recognizer unaligned score near chance (mobileface 0.03 vs
    0.83 re-aligned on 30 LFW identities)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square [N, 3, H, H] crops, got {tuple(images.shape)}")
    src, dst = model_template(src_model), model_template(dst_model)
    if src == dst:
        return resize_to(images, (size, size))
    matrix = umeyama(template(images.shape[-1], src[1], src[0]), template(size, dst[1], dst[0]))
    return warp_affine(images, matrix, size) if len(images) else images


def center_crop(image: torch.Tensor, size: int, fraction: float = CENTER_CROP_FRACTION) -> torch.Tensor:
    """Centre square of side ``fraction * min(H, W)`` resized to ``size`` (antialiased)."""
    if not 0.05 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0.05, 1], got {fraction}")
    _, h, w = image.shape
    side = fraction * min(h, w)
    top, left = (h - side) / 2.0, (w - side) / 2.0
    # Crop by an axis-aligned similarity: exact sub-pixel placement for any fraction.
    scale = size / side
    matrix = np.array([[scale, 0, (0.5 - left) * scale - 0.5], [0, scale, (0.5 - top) * scale - 0.5]])
    if scale < 1.0:  # shrinking: antialias first so the crop is not aliased
        image = F.interpolate(image.unsqueeze(0).float(), scale_factor=scale, mode="bilinear",
                              antialias=True, align_corners=False)[0]
        matrix = np.array([[1.0, 0, (0.5 - left * scale) - 0.5], [0, 1.0, (0.5 - top * scale) - 0.5]])
    return warp_affine(image, matrix, size)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Whole image resized to ``size`` x ``size`` (aspect not kept, antialiased)."""
    return F.interpolate(image.unsqueeze(0).float(), size=(size, size), mode="bilinear",
                         antialias=True, align_corners=False)[0].clamp(0.0, 1.0)


def load_image(item: ImageLike) -> torch.Tensor:
    """An image path, PIL image, ``[3, H, W]`` tensor in [0, 1] or ``[H, W, 3]`` uint8
    array -> float tensor ``[3, H, W]`` in [0, 1] (RGB)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise InvalidInput(f"an image tensor must be [3, H, W] RGB in [0, 1], got {tuple(item.shape)}")
        if not torch.isfinite(item).all():
            raise InvalidInput("image tensor holds NaN or infinite values")
        return item.float().clamp(0.0, 1.0)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise InvalidInput(f"an image array must be [H, W, 3] uint8, got {item.shape} {item.dtype}")
        return torch.from_numpy(item.copy()).permute(2, 0, 1).float() / 255.0
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise NotFound(f"image {str(path)!r} does not exist")
        try:
            with Image.open(path) as im:
                item = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInput(f"{str(path)!r} is not a readable image (JPEG/PNG/...): {exc}") from None
    if isinstance(item, Image.Image):
        arr = np.asarray(item.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
    raise InvalidInput(f"unsupported image type {type(item).__name__}; accepted: path, PIL image, "
                       "[3, H, W] tensor in [0, 1], [H, W, 3] uint8 array")


def align_faces(images: ImageLike | Sequence[ImageLike], size: int, alignment: str = "landmarks",
                zoom: float | None = None, model: str | None = None, detector=None,
                cache_dir: str | os.PathLike | None = None, pick: str = "largest",
                kind: str | None = None) -> torch.Tensor:
    """Aligned face crops ``[N, 3, size, size]`` in [0, 1].

    ``images``: paths, PIL images, ``[3, H, W]`` tensors, or one ``[N, 3, H, W]`` batch.
    ``alignment``: ``landmarks`` (BlazeFace keypoints -> template; the face chosen by
    ``pick`` = largest | score | center, see ``BlazeFaceDetector.best_face``; raises
    :class:`photoveil.facemodels.detect.NoFaceDetected` naming the image when none is
    found), ``center`` (centre crop for LFW-style pre-cropped photos) or ``none``
    (resize only). ``kind`` (arcface | dlib) and ``zoom`` override the template
    tuned for ``model`` (:data:`MODEL_TEMPLATE`; default arcface at zoom 1). Detections
    of image files are cached on disk under ``cache_dir`` (see :class:`BlazeFaceDetector`).
    """
    if alignment not in ALIGNMENTS:
        raise InvalidInput(f"alignment {alignment!r} is not one of {', '.join(ALIGNMENTS)}")
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        items: list = list(images)
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise InvalidInput("align_faces needs at least one image")
    default_kind, default_zoom = model_template(model)
    kind = kind or default_kind
    zoom = default_zoom if zoom is None else zoom
    out = []
    if alignment == "landmarks" and detector is None:
        from photoveil.facemodels.detect import default_detector

        detector = default_detector(cache_dir=cache_dir)
    for item in items:
        image = load_image(item)
        if alignment == "none":
            out.append(resize(image, size))
        elif alignment == "center":
            out.append(center_crop(image, size))
        else:
            source = item if isinstance(item, (str, os.PathLike)) else None
            face = detector.best_face(image, source=source, pick=pick)
            out.append(warp_affine(image, landmark_matrix(face.keypoints, size, zoom, kind), size))
    return torch.stack(out)
