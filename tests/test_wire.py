"""Wire tensors (KServe v2) and encoded images: round trips and every refusal."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from photoveil import wire
from photoveil.errors import InvalidInput
from photoveil.wire import TooLarge, WireTensor

NUMPY_DTYPES = ["?", "u1", "<u2", "<u4", "<u8", "i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NUMPY_DTYPES).flatmap(lambda d: hnp.arrays(np.dtype(d), shapes)))
def test_numpy_round_trip_is_bit_exact(array):
    t = wire.encode_numpy(array, "x")
    assert len(t.raw) == array.size * array.dtype.itemsize
    back = wire.decode_numpy(wire.from_proto(wire.to_proto(t)))
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    assert back.tobytes() == np.ascontiguousarray(array).astype(back.dtype).tobytes()  # NaN-safe


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, shapes, elements=st.floats(-1e4, 1e4, width=32)),
       st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64]))
def test_torch_round_trip(array, dtype):
    tensor = torch.from_numpy(array).to(dtype)
    msg = wire.torch_to_proto(tensor, "t")
    back = wire.proto_to_torch(msg)
    assert back.dtype == dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_raw_bytes_are_little_endian_row_major():
    t = wire.encode_numpy(np.array([[1, 2], [3, 256]], dtype=">i4"))  # big-endian input
    assert t.datatype == "INT32" and t.shape == (2, 2)
    assert t.raw == b"\x01\0\0\0\x02\0\0\0\x03\0\0\0\x00\x01\0\0"
    f = wire.encode_numpy(np.array([1.0], np.float16))
    assert (f.datatype, f.raw) == ("FP16", b"\x00\x3c")


@pytest.mark.parametrize("tensor, match", [
    (WireTensor("", "FP33", (1,), b"\0" * 4), "unknown tensor datatype 'FP33'"),
    (WireTensor("", "FP32", (2, 2), b"\0" * 15), "needs 16 bytes of raw_contents, got 15"),
    (WireTensor("", "FP32", (2, -2), b""), "negative dimension"),
    (WireTensor("", "UINT8", (1,) * 9, b"\0"), "rank 9 is over the maximum"),
])
def test_bad_headers_are_refused(tensor, match):
    with pytest.raises(InvalidInput, match=match):
        wire.decode_numpy(tensor)


def test_oversize_is_too_large_before_allocation():
    huge = WireTensor("", "FP64", (1 << 20, 1 << 20, 1 << 20), b"")  # 8 EB: must not be allocated
    with pytest.raises(TooLarge, match="the limit is"):
        wire.decode_numpy(huge, max_bytes=1 << 20)
    assert issubclass(TooLarge, InvalidInput)


def test_unsupported_numpy_dtype():
    with pytest.raises(InvalidInput, match="no wire datatype"):
        wire.encode_numpy(np.array(["a"]))


def test_require_finite_counts_bad_values():
    x = torch.tensor([1.0, float("nan"), float("inf"), 0.0])
    with pytest.raises(InvalidInput, match="2 NaN/Inf"):
        wire.require_finite(x)
    assert wire.require_finite(torch.ones(2)) is not None


def test_image_batch_accepts_and_normalises():
    u8 = torch.full((3, 4, 5), 255, dtype=torch.uint8)
    out = wire.image_batch(u8, size=(4, 5))
    assert out.shape == (1, 3, 4, 5) and out.dtype == torch.float32 and float(out.max()) == 1.0
    assert wire.image_batch(torch.rand(2, 3, 4, 5).half()).dtype == torch.float32


@pytest.mark.parametrize("tensor, size, match", [
    (torch.rand(1, 4, 8, 8), None, r"not \[N,3,H,W\]"),
    (torch.rand(8, 8), None, r"not \[N,3,H,W\]"),
    (torch.rand(0, 3, 8, 8), None, "is empty"),
    (torch.rand(1, 3, 8, 8), (16, 16), "the model takes 16x16"),
    (torch.ones(1, 3, 2, 2, dtype=torch.int32), None, "datatype int32 is not accepted"),
    (torch.full((1, 3, 2, 2), float("nan")), None, "NaN/Inf"),
    (torch.full((1, 3, 2, 2), 2.0), None, r"must lie in \[0,1\]"),
    (torch.full((1, 3, 2, 2), -0.5), None, r"must lie in \[0,1\]"),
])
def test_image_batch_refusals(tensor, size, match):
    with pytest.raises(InvalidInput, match=match):
        wire.image_batch(tensor, size)


def _png(mode="RGB", size=(6, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=128 if mode == "L" else (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_decode_png_and_jpeg():
    img = wire.decode_image(_png())
    assert img.shape == (3, 4, 6) and img.dtype == torch.float32
    assert torch.allclose(img[:, 0, 0], torch.tensor([10, 200, 30]) / 255.0)
    gray = wire.decode_image(_png("L"))
    assert gray.shape == (3, 4, 6)  # grayscale becomes RGB
    ramp = torch.linspace(0, 1, 16)
    x = torch.stack([ramp[None].expand(16, 16), ramp[:, None].expand(16, 16), torch.full((16, 16), 0.5)])
    jpeg = wire.encode_image(x, "JPEG", quality=95)
    assert wire.sniff_format(jpeg) == "JPEG"
    assert (wire.decode_image(jpeg) - x).abs().mean() < 0.02


def test_exif_orientation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (8, 4)).save(buf, "JPEG", exif=exif.tobytes())
    assert wire.decode_image(buf.getvalue()).shape == (3, 8, 4)


@pytest.mark.parametrize("data, err, match", [
    (b"", InvalidInput, "empty"),
    (b"GIF89a....", InvalidInput, "only JPEG and PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, InvalidInput, "corrupt PNG"),
    (b"\xff\xd8\xff" + b"\x13" * 40, InvalidInput, "corrupt JPEG"),
])
def test_decode_refusals(data, err, match):
    with pytest.raises(err, match=match):
        wire.decode_image(data)


def test_truncated_images_are_corrupt():
    png, jpeg = _png(size=(64, 64)), wire.encode_image(torch.rand(3, 64, 64), "JPEG")
    with pytest.raises(InvalidInput, match="corrupt PNG"):
        wire.decode_image(png[: len(png) // 2])
    with pytest.raises(InvalidInput, match="corrupt JPEG"):
        wire.decode_image(jpeg[: len(jpeg) // 2])


def test_pixel_and_byte_limits():
    png = _png(size=(100, 100))
    with pytest.raises(TooLarge, match="10000 pixels"):
        wire.decode_image(png, max_pixels=9999)
    with pytest.raises(TooLarge, match="bytes; the limit"):
        wire.decode_image(png, max_bytes=10)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]))
def test_random_bytes_never_escape_as_other_errors(data, magic):
    try:
        img = wire.decode_image(magic + data)
    except InvalidInput:
        return
    assert img.dim() == 3 and img.shape[0] == 3


def test_resize():
    x = torch.rand(2, 3, 10, 20)
    assert wire.resize(x, (10, 20)) is x
    y = wire.resize(x, (5, 5))
    assert y.shape == (2, 3, 5, 5) and 0 <= float(y.min()) and float(y.max()) <= 1
