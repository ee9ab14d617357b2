"""Pasting a protected crop back into a photo (no models): only the face square changes,
a zero perturbation changes nothing, and the multi-scale windows cover the photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from photoveil.client.photos import is_output, plan
from photoveil.facemodels.align import landmark_matrix
from photoveil.facemodels.multiscale import windows
from photoveil.facemodels.regions import aligned_crop, paste_back, region

KEYPOINTS = np.array([[700.0, 500.0], [900.0, 505.0], [800.0, 620.0], [800.0, 720.0]])  # a 200-px-eye-span face


def _photo(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)


def test_paste_changes_only_the_face_square():
    photo = _photo()
    m = landmark_matrix(KEYPOINTS, 150)
    out = photo.copy()
    box = paste_back(out, torch.zeros(3, 150, 150), m)
    x0, y0, x1, y1 = box
    changed = np.any(out != photo, axis=2)
    assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    ys, xs = np.mgrid[0:1200, 0:1600]
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = (u > -0.5) & (u < 149.5) & (v > -0.5) & (v < 149.5)
    assert not changed[~inside].any()
    core = (u > 15) & (u < 135) & (v > 15) & (v < 135)
    assert (out[core] == 0).all()  # the crop (black) fully replaces the face inside the feather


def test_zero_perturbation_changes_nothing_and_large_faces_keep_detail():
    photo = _photo(1)
    image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
    m = landmark_matrix(KEYPOINTS, 150)
    crop = aligned_crop(image, m, 150)
    out = photo.copy()
    paste_back(out, crop, m, original=crop)
    assert np.array_equal(out, photo)
    delta = torch.full_like(crop, 0.1)
    paste_back(out, (crop + delta).clamp(0, 1), m, original=crop)
    x0, y0, x1, y1 = region(m, 150, photo.shape[:2])
    centre = (slice((y0 + y1) // 2 - 20, (y0 + y1) // 2 + 20), slice((x0 + x1) // 2 - 20, (x0 + x1) // 2 + 20))
    diff = out[centre].astype(int) - photo[centre].astype(int)
    assert np.abs(diff[np.asarray(photo[centre]) < 200] - 26).max() <= 1  # +0.1 on the photo's own pixels


def test_windows_cover_a_12mp_photo():
    wins = windows(3024, 4032)
    tiles = [w for w in wins if w.side < 4032]
    for k in (2, 3):
        side = 4032 / k
        level = [w for w in tiles if abs(w.side - side) < 1e-6]
        assert min(w.x0 for w in level) == 0 and max(w.x0 + w.side for w in level) == 4032
        assert max(w.y0 + w.side for w in level) == 3024
    assert len(windows(250, 250)) == 2  # small photos: the whole and zoomed-out passes only


def test_plan_never_shares_a_path(tmp_path):
    a, b = tmp_path / "DCIM" / "100APPLE", tmp_path / "DCIM" / "101APPLE"
    photos = [(a / "IMG_1.jpg", tmp_path / "DCIM"), (a / "IMG_1.png", tmp_path / "DCIM"),
              (b / "IMG_1.jpg", tmp_path / "DCIM"), (tmp_path / "x" / "IMG_1.jpg", None),
              (tmp_path / "y" / "IMG_1.jpg", None)]
    plans = plan(photos, tmp_path / "OUT", "pmt", "png")
    paths = [p.photo for p in plans]
    assert len(set(paths)) == len(paths) == 5
    assert all(is_output(p) for p in paths) and not is_output(Path("IMG_1.jpg"))
    assert tmp_path / "OUT" / "DCIM" / "101APPLE" / "IMG_1.pmt.png" in paths


def test_heic_is_read_or_reported_by_name(tmp_path):
    from photoveil.client.photos import collect, heic_support, read_photo, unsupported_reason

    path = tmp_path / "IMG_2.heic"
    if heic_support():
        import pillow_heif
        from PIL import Image

        pillow_heif.from_pillow(Image.new("RGB", (64, 48), (200, 30, 30))).save(path, quality=90)
        assert [f.name for f, _ in collect([str(tmp_path)]).photos] == ["IMG_2.heic"]
        assert read_photo(path).shape == (48, 64, 3)
    else:
        path.write_bytes(b"not read")
        assert [f.name for f in collect([str(tmp_path)]).unsupported] == ["IMG_2.heic"]
        assert "pillow-heif" in unsupported_reason(path)


def test_detect_recall_writes_table_and_json(face_models_dir, tmp_path, capsys):
    import json

    from photoveil.cli import main

    lfw = Path(__file__).parent / "fixtures" / "lfw_small" / "images"
    assert main(["models", "detect-recall", "--lfw", str(lfw), "--lfw-limit", "3", "--composites", "1",
                 "--size", "640", "480", "--fractions", "0.2", "--max-faces", "2", "--out", str(tmp_path)]) == 0
    assert "| multiscale |" in capsys.readouterr().out
    result = json.loads((tmp_path / "detect-recall.json").read_text())
    assert result["lfw"]["images"] == 3 and 0 <= result["composites"]["multiscale"]["recall"] <= 1
    assert main(["models", "detect-recall", "--out", str(tmp_path), "--fractions", "2"]) == 2
