"""`photoveil evaluate --data DIR` on a user's own labelled photos (DIR/<person>/<photo>):
full photos oriented and their face found as `protect` does, photos without a face named
and left out, the plain-language report with n and an interval per recognizer, and
labelled example sheets linked from results.md; bad folders refused before any model."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photoveil.cli import main
from photoveil.evaluation.composites import composite
from photoveil.evaluation.metrics import wilson
from photoveil.evaluation.plain import GUESSING, STILL, verdict
from photoveil.facemodels.align import load_image

LFW_SMALL = Path(__file__).parent / "fixtures" / "lfw_small" / "images"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _no_models(monkeypatch):
    from photoveil.facemodels import registry

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(registry, "load", refuse)


@pytest.mark.parametrize("layout, expect", [
    ("missing", "does not exist"),
    ("one-person", "needs >= 2 person folders with >= 2 photos each"),
    ("one-photo-each", "found 0"),
])
def test_bad_folder_exits_2_in_one_line_before_models(tmp_path, monkeypatch, layout, expect):
    _no_models(monkeypatch)
    root = tmp_path / "people"
    if layout != "missing":
        for person, k in (("alice", 3), ("bob", 0 if layout == "one-person" else 1)):
            (root / person).mkdir(parents=True)
            for i in range(k if layout == "one-person" else 1):
                Image.new("RGB", (40, 40)).save(root / person / f"{i}.jpg")
    rc, out, err = _run(["evaluate", "--data", str(root), "--method", "pmt", "--no-progress"])
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and expect in err and "Traceback" not in err


def test_verdict_needs_the_interval_above_chance():
    assert verdict(1.0, 12, 3) == STILL
    assert verdict(0.33, 12, 3) == GUESSING   # chance is 1 in 3
    assert verdict(0.5, 4, 3) == GUESSING     # too few photos to tell
    lo, hi = wilson(0.5, 40)
    assert 0.34 < lo < 0.5 < hi < 0.66


def _arr(photo: torch.Tensor) -> np.ndarray:
    return (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """3 people x 3 full photos (faces pasted at 20-30 % of 900x700 backgrounds; one stored
    rotated with EXIF orientation 6, one in a sub-folder), plus a photo with no face."""
    root = tmp_path_factory.mktemp("own") / "people"
    rng = np.random.default_rng(3)
    names = sorted(p.name for p in LFW_SMALL.iterdir() if len(list(p.glob("*.jpg"))) >= 3)[:3]
    for k, name in enumerate(names):
        person = root / name.split("_")[0].lower()
        (person / "2024").mkdir(parents=True)
        for i, src in enumerate(sorted((LFW_SMALL / name).glob("*.jpg"))[:3]):
            photo, _ = composite([(load_image(src), name)], [0.2 + 0.05 * i], (700, 900), rng)
            im = Image.fromarray(_arr(photo))
            dest = person / ("2024" if i == 2 else ".") / f"IMG_{i}.jpg"
            if k == 0 and i == 1:
                exif = Image.Exif()
                exif[0x0112] = 6
                im.transpose(Image.Transpose.ROTATE_90).save(dest, exif=exif.tobytes(), quality=95)
            else:
                im.save(dest, quality=95)
    grey = next(iter(sorted(root.iterdir()))) / "grey.png"
    Image.new("RGB", (640, 480), (128, 128, 128)).save(grey)
    return root


@pytest.mark.models
def test_own_photos_report(face_models_dir, people, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = _run(["evaluate", "--data", str(people), "--method", "pmt", "--evaluated", "faceres",
                            "--calib-pairs", "0", "--out", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0, err
    conf = json.loads((out / "config.json").read_text())
    skipped = conf["photos"]["skipped"]
    # the no-face photo is named with its reason; every real photo (the EXIF-rotated one too) has its face
    assert [Path(p).name for p in skipped] == ["grey.png"] and "no face found" in next(iter(skipped.values()))
    assert conf["data"]["identities"] == 3 and conf["data"]["test_images"] == 9
    assert conf["config"]["attacks"] == ["abuse", "attributes"]
    # plain words on stdout and in results.md: both recognizers, counts and an interval each
    assert "grey.png: no face found" in stdout
    assert "faceapi-resnet34 (the service you protect for)" in stdout
    assert "faceres (an unauthorized recognizer)" in stdout
    assert stdout.count("95 % CI") == 2 and "of 6 protected photos" in stdout
    md = (out / "results.md").read_text()
    assert "## In plain words" in md and "![examples-faceapi-resnet34.png](examples-faceapi-resnet34.png)" in md
    assert (out / "examples-faceapi-resnet34.png").is_file()
    recs = json.loads((out / "results.json").read_text())
    top1 = {r["evaluated_model"]: r for r in recs if r["attack"] == "abuse" and r["metric"] == "top1"}
    clean = {r["evaluated_model"]: r["value"] for r in recs if r["attack"] == "abuse" and r["metric"] == "clean_top1"}
    # the faces were found and aligned well enough that the recognizers know these people unprotected
    assert clean["faceapi-resnet34"] >= 5 / 6 and clean["faceres"] >= 5 / 6
    # and the protection acts on them: the authorized model keeps them, faceres loses some
    # (6 probes among 3 people: too few to demand chance; the report's interval says so)
    assert top1["faceapi-resnet34"]["value"] >= 4 / 6 and top1["faceres"]["value"] < clean["faceres"]


@pytest.mark.models
def test_face_patch_crops_equal_full_photo_crops(face_models_dir, people, tmp_path):
    """Crops are cut from a shrunk patch around the face, not the full photo: the same
    pixels up to resampling, for every model's template and size."""
    from photoveil.client.photos import read_photo
    from photoveil.evaluation.photos import PhotoIndex
    from photoveil.facemodels.align import landmark_matrix, model_template
    from photoveil.facemodels.regions import aligned_crop

    index = PhotoIndex.open(people)
    paths = [str(p) for files in index.people.values() for p in files]
    assert index.locate(paths, progress=False) == [p for p in paths if p.endswith("grey.png")]
    index._patches.clear()  # the crop path that re-reads the photo, too
    for path in [p for p in paths if p in index.faces][:4]:
        full = torch.from_numpy(read_photo(Path(path))).permute(2, 0, 1).float() / 255.0
        for model, size in (("faceapi-resnet34", 150), ("mobileface", 112)):
            kind, zoom = model_template(model)
            want = aligned_crop(full, landmark_matrix(index.faces[path].keypoints, size, zoom, kind), size)
            got = index.crop(path, size, model)
            assert got.shape == want.shape and float((got - want).abs().mean()) < 0.005


def test_lfw_layout_is_read_as_frames_unless_told(tmp_path):
    from photoveil.evaluation.config import EvalConfig

    lfw = Path(__file__).parent / "fixtures" / "lfw_small"
    assert not EvalConfig(data=str(lfw)).uses_photos                        # pairs.txt: LFW frames
    assert EvalConfig(data=str(lfw), faces="photos").uses_photos
    assert EvalConfig(data=str(tmp_path)).uses_photos                       # a user's folder
    assert not EvalConfig(data=str(tmp_path), alignment="center").uses_photos
    assert not EvalConfig().uses_photos                                     # the shared LFW
