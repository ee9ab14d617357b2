"""Tensors and images on the wire: KServe v2 / Triton tensors <-> numpy / torch.

A wire tensor is (name, datatype, shape, raw little-endian row-major bytes); see
``proto/photoveil/v1/tensor.proto``. Encoded images are JPEG or PNG. Every decoder
here checks its input and raises :class:`~photoveil.errors.InvalidInput` naming what
was wrong and what is accepted, or :class:`TooLarge` (a subclass the server maps to
RESOURCE_EXHAUSTED) when a configured size limit is exceeded.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from photoveil.errors import InvalidInput

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch

# KServe v2 datatype -> numpy dtype (explicitly little-endian). BF16 has no numpy
# dtype: it travels as its 16-bit pattern and becomes torch.bfloat16 in to_torch().
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
FLOAT_DATATYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
MAX_RANK = 8
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_PIXELS = 16_000_000  # a 16 MP photo (4000x4000); larger encoded images are refused


class TooLarge(InvalidInput):
    """Input over a configured size limit (-> RESOURCE_EXHAUSTED on the server)."""


@dataclass(frozen=True)
class WireTensor:
    """A decoded-but-unchecked wire tensor, independent of the protobuf classes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def _datatype_of(array: np.ndarray) -> str:
    kind, size = array.dtype.kind, array.dtype.itemsize
    table = {("b", 1): "BOOL", ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32",
             ("u", 8): "UINT64", ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32",
             ("i", 8): "INT64", ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64"}
    try:
        return table[(kind, size)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {array.dtype} has no wire datatype; "
                           f"accepted: {', '.join(DATATYPES)}") from None


def encode_numpy(array: np.ndarray, name: str = "") -> WireTensor:
    """Little-endian row-major bytes of ``array`` with its KServe datatype."""
    array = np.asarray(array)
    datatype = _datatype_of(array)
    data = np.ascontiguousarray(array, dtype=DATATYPES[datatype])
    return WireTensor(name, datatype, tuple(int(d) for d in array.shape), data.tobytes())


def encode_torch(tensor: "torch.Tensor", name: str = "") -> WireTensor:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        bits = tensor.view(torch.int16).numpy().astype("<i2", copy=False)
        return WireTensor(name, "BF16", tuple(tensor.shape), bits.tobytes())
    return encode_numpy(tensor.numpy(), name)


def _check_header(datatype: str, shape, nbytes: int, max_bytes: int | None) -> tuple[np.dtype, tuple[int, ...]]:
    if datatype not in DATATYPES:
        raise InvalidInput(f"unknown tensor datatype {datatype!r}; accepted: {', '.join(DATATYPES)}")
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"tensor rank {len(shape)} is over the maximum of {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"tensor shape {list(shape)} has a negative dimension")
    dtype = DATATYPES[datatype]
    expected = math.prod(shape) * dtype.itemsize  # exact: Python ints do not overflow
    if max_bytes is not None and (expected > max_bytes or nbytes > max_bytes):
        raise TooLarge(f"tensor of shape {list(shape)} {datatype} needs {max(expected, nbytes)} bytes; "
                       f"the limit is {max_bytes}")
    if nbytes != expected:
        raise InvalidInput(f"tensor of shape {list(shape)} {datatype} needs {expected} bytes of "
                           f"raw_contents, got {nbytes}")
    return dtype, shape


def decode_numpy(t: WireTensor, max_bytes: int | None = DEFAULT_MAX_BYTES) -> np.ndarray:
    """The array a wire tensor describes (a copy, native byte order). BF16 -> uint16 bits."""
    dtype, shape = _check_header(t.datatype, t.shape, len(t.raw), max_bytes)
    array = np.frombuffer(t.raw, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def decode_torch(t: WireTensor, max_bytes: int | None = DEFAULT_MAX_BYTES) -> "torch.Tensor":
    import torch

    array = decode_numpy(t, max_bytes)
    if t.datatype == "BF16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


# --- protobuf messages (photoveil.v1.Tensor) ---------------------------------------

def from_proto(msg: Any) -> WireTensor:
    return WireTensor(msg.name, msg.datatype, tuple(msg.shape), bytes(msg.raw_contents))


def to_proto(t: WireTensor):
    from photoveil.v1 import tensor_pb2

    return tensor_pb2.Tensor(name=t.name, datatype=t.datatype, shape=list(t.shape), raw_contents=t.raw)


def torch_to_proto(tensor: "torch.Tensor", name: str = ""):
    return to_proto(encode_torch(tensor, name))


def proto_to_torch(msg: Any, max_bytes: int | None = DEFAULT_MAX_BYTES) -> "torch.Tensor":
    return decode_torch(from_proto(msg), max_bytes)


# --- checks on decoded tensors ---------------------------------------------------

def require_finite(tensor: "torch.Tensor", what: str = "tensor") -> "torch.Tensor":
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InvalidInput(f"{what} holds {bad} NaN/Inf value(s); only finite numbers are accepted")
    return tensor


def image_batch(tensor: "torch.Tensor", size: tuple[int, int] | None = None) -> "torch.Tensor":
    """Validate an image tensor and return it as float32 [N,3,H,W] in [0,1].

    Accepts [3,H,W] or [N,3,H,W]; floating types must lie in [0,1] (a small rounding
    slack is clamped), UINT8 is scaled by 1/255. ``size`` = (H, W) the model expects.
    """
    import torch

    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise InvalidInput(f"image tensor shape {list(tensor.shape)} is not [N,3,H,W] or [3,H,W]")
    if tensor.shape[0] == 0 or tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise InvalidInput(f"image tensor shape {list(tensor.shape)} is empty")
    if size is not None and tuple(tensor.shape[2:]) != tuple(size):
        raise InvalidInput(f"image tensor is {tensor.shape[2]}x{tensor.shape[3]}, the model takes "
                           f"{size[0]}x{size[1]} (send an encoded image to have it resized)")
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if not tensor.is_floating_point():
        raise InvalidInput(f"image tensor datatype {str(tensor.dtype).removeprefix('torch.')} is not "
                           "accepted; send FP32/FP16/BF16/FP64 in [0,1] or UINT8")
    tensor = require_finite(tensor, "image tensor").float()
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InvalidInput(f"image values span [{lo:.4g}, {hi:.4g}]; float images must lie in [0,1]")
    return tensor.clamp_(0.0, 1.0)


# --- encoded images ----------------------------------------------------------------

_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


def sniff_format(data: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse)
_SWAPS_AXES = (5, 6, 7, 8)
_RESIZABLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, size: tuple[int, int] | None = None) -> "torch.Tensor":
    """Decode one JPEG/PNG to float32 [3,H,W] RGB in [0,1] (EXIF orientation applied).

    ``size`` = (H, W): the image is brought to that size while it is still 8-bit (a
    JPEG is decoded at a reduced DCT scale, ``draft``; a PNG is ``reduce``d by an integer
    factor, then resampled with an antialiased bilinear filter), so memory stays near
    one 8-bit copy of the image and only the final small tensor is float32. The pixel
    budget is checked from the header, before anything is decoded.
    """
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidInput("encoded image is empty; send the bytes of a JPEG or PNG file")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"encoded image is {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidInput(f"encoded image starts with {data[:8].hex()}; only JPEG and PNG are accepted")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            w, h = img.size
            if w * h > max_pixels:  # checked before decoding: no decompression bombs
                raise TooLarge(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
            if w == 0 or h == 0:
                raise InvalidInput(f"image is {w}x{h}; it has no pixels")
            if size is not None:
                swapped = img.getexif().get(0x0112, 1) in _SWAPS_AXES  # resize before rotating
                target = (size[0], size[1]) if swapped else (size[1], size[0])  # PIL sizes are (W, H)
                if fmt == "JPEG":
                    img.draft("RGB", target)  # DCT-domain downscale: never below target
                img.load()
                if img.mode not in _RESIZABLE_MODES:
                    img = img.convert("RGB")
                if img.size != target:
                    img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
            else:
                img.load()
            img = ImageOps.exif_transpose(img).convert("RGB")
            array = np.asarray(img, dtype=np.uint8).copy()
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"corrupt {fmt} image (the decoder cannot read it); send a complete JPEG or PNG "
                           "file") from None
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{fmt} image refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"corrupt {fmt} image ({exc}); send a complete JPEG or PNG file") from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def encode_image(image: "torch.Tensor", fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode float [3,H,W] in [0,1] as PNG or JPEG bytes (for clients and tests)."""
    from PIL import Image

    if fmt not in ("PNG", "JPEG"):
        raise ValueError(f"fmt must be 'PNG' or 'JPEG', got {fmt!r}")
    array = (image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def resize(images: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Bilinear (antialiased) resize of [N,3,H,W] to ``size`` = (H, W); no-op when equal."""
    import torch.nn.functional as F

    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)
