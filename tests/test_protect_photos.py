"""`photoveil protect` on full photos: every face protected and pasted back, pixels outside
the face regions unchanged, EXIF orientation honoured, metadata stripped, safe names,
reruns, the manifest, the tiny-face warning and unsupported formats."""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photoveil.cli import main
from photoveil.client.photos import read_photo
from photoveil.evaluation.composites import composite, matches
from photoveil.facemodels.align import load_image

FACES = sorted((Path(__file__).parent.parent / "photoveil" / "assets" / "faces").glob("*/*.jpg"))
FAST = ["--method", "pmt", "--steps", "2"]


def _arr(photo: torch.Tensor) -> np.ndarray:
    return (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A DCIM-like tree: a/IMG_1.jpg (two faces, stored rotated with EXIF orientation 6,
    GPS and an ICC profile), b/IMG_1.jpg (same stem, other folder), a/IMG_1.png (same
    stem, one small face), a/notes.bmp (unsupported), a/grey.png (no face), b/broken.jpg."""
    root = tmp_path_factory.mktemp("photos") / "DCIM"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    two, placed = composite([(load_image(FACES[0]), "f0"), (load_image(FACES[3]), "f3")], [0.22, 0.18], (480, 640), rng)
    upright = Image.fromarray(_arr(two))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "PhoneCo"
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPS latitude
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upright.transpose(Image.Transpose.ROTATE_90).save(root / "a" / "IMG_1.jpg", exif=exif.tobytes(), icc_profile=icc,
                                                      quality=95)
    one, _ = composite([(load_image(FACES[6]), "f6")], [0.3], (400, 400), rng)
    Image.fromarray(_arr(one)).save(root / "b" / "IMG_1.jpg", quality=95)
    small, small_placed = composite([(load_image(FACES[9]), "f9")], [0.08], (480, 640), rng)
    Image.fromarray(_arr(small)).save(root / "a" / "IMG_1.png")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(root / "a" / "notes.bmp")
    Image.new("RGB", (300, 200), (128, 128, 128)).save(root / "a" / "grey.png")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root, upright, placed, small_placed


@pytest.fixture(scope="module")
def first_run(face_models_dir, tree, tmp_path_factory):
    root = tree[0]
    out = tmp_path_factory.mktemp("out") / "OUT"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["protect", str(root), "--out", str(out), *FAST])
    return out, Run(rc, err.getvalue())


@dataclass
class Run:
    returncode: int
    stderr: str


def test_every_face_is_protected_in_the_full_photo(tree, first_run):
    root, upright, placed, _ = tree
    out, proc = first_run
    assert proc.returncode == 1, proc.stderr  # grey.png (no face), broken.jpg and notes.bmp failed
    manifest = json.loads((out / "photoveil-run.json").read_text())
    entry = next(e for e in manifest["inputs"] if e["input"].endswith("a/IMG_1.jpg"))
    assert entry["status"] == "protected" and len(entry["faces"]) == 2
    for p in placed:  # both pasted faces were found
        assert any(matches(p.box, f["box"]) for f in entry["faces"])
    result = np.asarray(Image.open(out / "a" / "IMG_1_jpg.pmt.png"))
    original = read_photo(root / "a" / "IMG_1.jpg")
    assert result.shape == original.shape == (480, 640, 3)  # EXIF orientation applied, size kept
    # The oriented input is what the viewer shows: the upright composite (up to JPEG loss).
    assert np.abs(original.astype(int) - np.asarray(upright).astype(int)).mean() < 4
    inside = np.zeros(result.shape[:2], dtype=bool)
    ys, xs = np.mgrid[0:480, 0:640]
    for f in entry["faces"]:
        m = np.asarray(f["matrix"])
        u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        face = (u > -0.5) & (u < 149.5) & (v > -0.5) & (v < 149.5)
        core = (u > 20) & (u < 130) & (v > 20) & (v < 130)
        assert np.abs(result[core].astype(int) - original[core].astype(int)).mean() > 20  # noise pasted in
        inside |= face
        crop = np.asarray(Image.open(f["crop"]))
        assert crop.shape == (150, 150, 3)
    assert np.array_equal(result[~inside], original[~inside])  # not one pixel outside changed


def test_metadata_is_stripped(first_run):
    out, _ = first_run
    with Image.open(out / "a" / "IMG_1_jpg.pmt.png") as im:
        assert not im.getexif() and "exif" not in im.info and "icc_profile" not in im.info
        assert not any(k.lower().startswith(("xml", "xmp")) for k in im.info)


def test_names_mirror_the_tree_and_never_collide(first_run):
    out, proc = first_run
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert names == ["a/IMG_1_jpg.pmt.face0.png", "a/IMG_1_jpg.pmt.face1.png", "a/IMG_1_jpg.pmt.png",
                     "a/IMG_1_png.pmt.face0.png", "a/IMG_1_png.pmt.png",
                     "b/IMG_1.pmt.face0.png", "b/IMG_1.pmt.png"]
    assert (out / "b" / "IMG_1.pmt.png").is_file()
    assert len({p.name for p in (out / "a").glob("IMG_1*.pmt.png")}) == 2
    manifest = json.loads((out / "photoveil-run.json").read_text())
    failed = {Path(f["input"]).name: f["reason"] for f in manifest["failures"]}
    assert set(failed) == {"grey.png", "notes.bmp", "broken.jpg"}
    assert "no face" in failed["grey.png"] and "not a supported photo format" in failed["notes.bmp"]
    assert "not a readable photo" in failed["broken.jpg"]
    assert "notes.bmp" in proc.stderr and "grey.png" in proc.stderr  # the failure table
    assert manifest["summary"]["faces_detected"] == manifest["summary"]["faces_protected"] == 4


def test_tiny_face_warning(first_run):
    _, proc = first_run
    assert "warning" in proc.stderr and "IMG_1.png" in proc.stderr and "px wide" in proc.stderr


def test_rerun_skips(tree, first_run, capsys):
    root = tree[0]
    out, _ = first_run
    photo = out / "b" / "IMG_1.pmt.png"
    before = photo.stat().st_mtime_ns
    rc = main(["protect", str(root), "--out", str(out), *FAST, "--json"])  # the same run again
    manifest = json.loads(capsys.readouterr().out)
    assert rc == 1  # grey.png, broken.jpg and notes.bmp still fail
    status = {Path(e["input"]).relative_to(root).as_posix(): e["status"] for e in manifest["inputs"]}
    assert status == {"a/IMG_1.jpg": "skipped", "a/IMG_1.png": "skipped", "b/IMG_1.jpg": "skipped",
                      "a/grey.png": "failed", "a/notes.bmp": "failed", "b/broken.jpg": "failed"}
    assert all("already protected" in e["reason"] for e in manifest["inputs"] if e["status"] == "skipped")
    assert photo.stat().st_mtime_ns == before  # not rewritten


def test_overwrite_redoes(tree, first_run):
    out, _ = first_run
    photo = out / "b" / "IMG_1.pmt.png"
    before = photo.stat().st_mtime_ns
    assert main(["protect", str(tree[0] / "b"), "--out", str(out / "b"), *FAST, "--overwrite"]) == 1  # broken.jpg
    assert photo.stat().st_mtime_ns > before


def test_in_place_and_jpg(tree, tmp_path, face_models_dir):
    src = tmp_path / "roll"
    src.mkdir()
    (src / "IMG_9.jpg").write_bytes((tree[0] / "b" / "IMG_1.jpg").read_bytes())
    assert main(["protect", str(src), "--in-place", "--format", "jpg", "--quality", "80", *FAST]) == 0
    out = src / "IMG_9.pmt.jpg"
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (400, 400) and not im.getexif()
    # a rerun in place does not take its own outputs as inputs
    assert main(["protect", str(src), "--in-place", "--format", "jpg", *FAST]) == 0
    manifest = json.loads((src / "photoveil-run.json").read_text())
    assert {e["status"] for e in manifest["inputs"]} == {"skipped"}
    assert not list(src.glob("*.pmt.pmt*"))
