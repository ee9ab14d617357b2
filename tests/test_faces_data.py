"""Identity-folder datasets, LFW pairs parsing, alignment geometry and BlazeFace detection."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from photoveil.data.faces import (FaceDataset, generate_pairs, parse_pairs, scan_identity_folder,
                                  split_identities, subset_pairs)
from photoveil.errors import InvalidInput, NotFound
from photoveil.facemodels import align

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lfw_small"


# --- identity folders and pairs ------------------------------------------------------------

def test_fixture_layout_and_scan():
    folder = scan_identity_folder(FIXTURE)
    assert len(folder.identities) == 10
    assert all(len(folder.images[n]) == 4 for n in folder.identities)
    labels = {label for _, label in folder.samples()}
    assert labels == set(range(10))
    with pytest.raises(InvalidInput, match=">= 5 image"):
        scan_identity_folder(FIXTURE, min_images=5)


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        scan_identity_folder(tmp_path / "nope")
    (tmp_path / "empty_person").mkdir()
    with pytest.raises(InvalidInput, match="no identity folders"):
        scan_identity_folder(tmp_path)


def test_split_is_disjoint_and_deterministic():
    folder = scan_identity_folder(FIXTURE)
    train, test = split_identities(folder, test_fraction=0.3, seed=7)
    assert set(train.identities).isdisjoint(test.identities)
    assert set(train.identities) | set(test.identities) == set(folder.identities)
    assert len(test.identities) == 3
    again = split_identities(scan_identity_folder(FIXTURE), test_fraction=0.3, seed=7)
    assert again[1].identities == test.identities
    other = [split_identities(folder, 0.3, seed=s)[1].identities for s in range(6)]
    assert len({tuple(o) for o in other}) > 1  # the seed matters
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_identities(folder, test_fraction=1.0)


def test_parse_fixture_pairs():
    pairs = parse_pairs(FIXTURE / "pairs.txt")
    same = [p for p in pairs if p.same]
    assert len(same) == 60 and len(pairs) == 120
    assert all(p.path_a.parent.name == p.path_b.parent.name for p in same)
    assert all(p.path_a.parent.name != p.path_b.parent.name for p in pairs if not p.same)
    assert all(p.path_a.is_file() and p.path_b.is_file() for p in pairs)


@pytest.mark.parametrize("line, message", [
    ("Alice\t1\n", "malformed"),
    ("Alice\tone\t2\n", "malformed"),
    ("Alice\t1\t2\tBob\t3\n", "malformed"),
    ("Alice\t0\t2\n", "1-based"),
    ("Alice\t2\t2\n", "two different images"),
    ("Alice\t1\tAlice\t2\n", "identity twice"),
])
def test_malformed_pair_lines(tmp_path, line, message):
    f = tmp_path / "pairs.txt"
    f.write_text("Alice\t1\t2\n" + line)
    with pytest.raises(InvalidInput, match=message) as err:
        parse_pairs(f, data_root=FIXTURE, check_files=False)
    assert ":2:" in str(err.value)  # names the line


def test_pairs_header_and_missing_image(tmp_path):
    name = scan_identity_folder(FIXTURE).identities[0]
    f = tmp_path / "pairs.txt"
    f.write_text(f"10\t300\n{name}\t1\t2\n")
    assert len(parse_pairs(f, data_root=FIXTURE)) == 1
    f.write_text(f"{name}\t1\t9\n")
    with pytest.raises(NotFound, match="_0009.jpg"):
        parse_pairs(f, data_root=FIXTURE)


def test_generate_and_subset_pairs():
    folder = scan_identity_folder(FIXTURE)
    pairs = generate_pairs(folder, 20, 30, seed=1)
    assert sum(p.same for p in pairs) == 20 and len(pairs) == 50
    assert len({(p.path_a, p.path_b) for p in pairs}) == 50
    assert all((p.path_a.parent == p.path_b.parent) == p.same for p in pairs)
    assert generate_pairs(folder, 20, 30, seed=1) == pairs
    with pytest.raises(InvalidInput, match="has 60"):
        generate_pairs(folder, 61, 0)
    sub = subset_pairs(pairs, 10, seed=0)
    assert len(sub) == 10 and sum(p.same for p in sub) == 4
    assert subset_pairs(pairs, 10, seed=0) == sub


# --- alignment geometry -----------------------------------------------------------------------

def test_umeyama_identity_on_template():
    for size in (112, 150, 224):
        for kind in align.TEMPLATES:
            pts = align.template(size, kind=kind)
            m = align.umeyama(pts, pts)
            np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
            np.testing.assert_allclose(align.landmark_matrix(pts, size, kind=kind), m, atol=1e-9)
    # the 112 template scales with the crop: same relative positions at 224
    np.testing.assert_allclose((align.template(224) + 0.5) / 224, (align.template(112) + 0.5) / 112)


def test_umeyama_recovers_rotation_scale_translation():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, t = math.radians(23.0), 1.7, np.array([12.0, -5.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = src @ (scale * rot).T + t
    m = align.umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    # A reflection is not a similarity: the fit stays a proper rotation.
    m_ref = align.umeyama(src, src * [-1, 1])
    assert np.linalg.det(m_ref[:, :2]) > 0


def test_warp_recovers_known_similarity():
    """Draw dots at template points after a known rotation+scale, align, find them back."""
    size = 112
    tpl = align.template(size)
    angle, scale, t = math.radians(-17.0), 1.4, np.array([40.0, 25.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = tpl @ (scale * rot).T + t
    image = torch.zeros(3, 250, 250)
    yy, xx = torch.meshgrid(torch.arange(250.0), torch.arange(250.0), indexing="ij")
    for x, y in pts:
        image[0] += torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2))
    m = align.landmark_matrix(pts, size)
    np.testing.assert_allclose(m[:, :2], np.linalg.inv(scale * rot), atol=1e-9)
    out = align.warp_affine(image.clamp(0, 1), m, size)[0]
    for x, y in tpl:  # each blob's local maximum lands on its template point
        x0, y0 = int(round(x)), int(round(y))
        win = out[y0 - 4:y0 + 5, x0 - 4:x0 + 5]
        dy, dx = divmod(int(win.argmax()), 9)
        assert abs(x0 - 4 + dx - x) <= 1.0 and abs(y0 - 4 + dy - y) <= 1.0


def test_realign_matches_aligning_the_photo_for_the_other_template():
    """A dlib-chip crop (faceapi-resnet34's geometry) re-aligned for an ArcFace-template
    model equals that model's own crop of the same photo where the chip covers it, and a
    same-template pair is only resized."""
    torch.manual_seed(0)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32), size=(250, 250), mode="bilinear",
                                            align_corners=False)[0]
    kp = align.template(250, 0.5) + np.array([6.0, -4.0])   # a face in the photo
    kind, zoom = align.model_template("faceapi-resnet34")
    chip = align.warp_affine(photo, align.landmark_matrix(kp, 150, zoom, kind), 150)
    own = align.warp_affine(photo, align.landmark_matrix(kp, 112), 112)
    got = align.realign(chip[None], "faceapi-resnet34", "mobileface", 112)[0]
    covered = got.sum(0) > 0.05
    assert covered.float().mean() > 0.5                       # the chip covers most of the crop
    assert (got - own).abs()[:, covered].mean() < 0.02
    resized = torch.nn.functional.interpolate(own[None], size=(96, 96), mode="bilinear", antialias=True,
                                              align_corners=False)
    assert torch.allclose(align.realign(own[None], "mobileface", "faceres", 96), resized.clamp(0, 1))
    unaligned = torch.nn.functional.interpolate(chip[None], size=(112, 112), mode="bilinear", antialias=True,
                                                align_corners=False)
    assert (unaligned[0] - own).abs().mean() > 2 * (got - own).abs()[:, covered].mean()


def test_center_and_none_modes():
    img = torch.rand(3, 250, 250)
    out = align.align_faces([img, img], 112, alignment="center")
    assert out.shape == (2, 3, 112, 112) and 0 <= out.min() and out.max() <= 1
    whole = align.align_faces(img, 150, alignment="none")
    assert whole.shape == (1, 3, 150, 150)
    # centre crop of a horizontal ramp covers the middle half of it
    ramp = torch.linspace(0, 1, 250).expand(3, 250, 250)
    crop = align.center_crop(ramp, 64, fraction=0.5)
    assert abs(float(crop[0, :, 0].mean()) - 0.25) < 0.02
    assert abs(float(crop[0, :, -1].mean()) - 0.75) < 0.02
    with pytest.raises(InvalidInput, match="landmarks, center, none"):
        align.align_faces(img, 112, alignment="funnel")


def test_face_dataset_items():
    ds = FaceDataset(FIXTURE, size=112, alignment="center")
    assert len(ds) == 40
    face, label = ds[5]
    assert face.shape == (3, 112, 112) and face.dtype == torch.float32
    assert int(label) == 1 and 0 <= float(face.min()) <= float(face.max()) <= 1
    with pytest.raises(ValueError, match="alignment"):
        FaceDataset(FIXTURE, size=112, alignment="bogus")


# --- detection (real BlazeFace) ------------------------------------------------------------

@pytest.fixture(scope="module")
def detector(face_models_dir):
    from photoveil.facemodels.detect import BlazeFaceDetector

    return BlazeFaceDetector(cache_dir=False)


@pytest.mark.models
def test_detects_one_face_per_fixture_image(detector):
    for path, _ in scan_identity_folder(FIXTURE).samples():
        faces = detector.detect(align.load_image(path))
        assert len(faces) == 1, path
        kp, box = faces[0].keypoints, faces[0].box
        right_eye, left_eye, nose, mouth = kp[:4]
        assert right_eye[0] < left_eye[0]  # subject's right eye is on the image left
        assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]  # eyes above nose above mouth
        assert 70 < box[0] + (box[2] - box[0]) / 2 < 180 and 60 < box[3] - box[1] < 200
        assert faces[0].score > 0.6


@pytest.mark.models
@pytest.mark.parametrize("kind", ["grey", "noise"])
def test_no_face_raises(detector, kind):
    from photoveil.facemodels.detect import NoFaceDetected

    gen = torch.Generator().manual_seed(0)
    img = torch.full((3, 250, 250), 0.5) if kind == "grey" else torch.rand(3, 250, 250, generator=gen)
    assert detector.detect(img) == []
    with pytest.raises(NoFaceDetected, match="no face detected"):
        align.align_faces([img], 112, detector=detector)
    assert issubclass(NoFaceDetected, InvalidInput)


@pytest.mark.models
def test_landmark_alignment_puts_eyes_on_template(detector):
    path = scan_identity_folder(FIXTURE).samples()[0][0]
    face = align.align_faces([path], 112, detector=detector)[0]
    again = detector.detect(torch.nn.functional.interpolate(face[None], size=256, mode="bilinear")[0])
    assert len(again) == 1
    kp = (again[0].keypoints[:4] + 0.5) * (112 / 256) - 0.5
    err = np.abs(kp - align.BLAZEFACE_TEMPLATE_112)
    # Re-detection on a tight crop is less precise, and BlazeFace's mouth point sits a
    # few pixels above the template's mouth-corner midpoint: eyes within 6 px, all within 9.
    assert err[:2].max() < 6.0 and err.max() < 9.0, err


@pytest.mark.models
def test_face_dataset_aligns_on_the_template_of_its_model(face_models_dir):
    """``FaceDataset(model=...)`` crops what the phone crops for that recognizer (its
    template), not the ArcFace chip it falls back to."""
    path = scan_identity_folder(FIXTURE).samples()[3][0]
    dlib = FaceDataset(FIXTURE, 150, model="faceapi-resnet34")[3][0]
    assert torch.allclose(dlib, align.align_faces([path], 150, model="faceapi-resnet34")[0])
    arcface = FaceDataset(FIXTURE, 150)[3][0]
    assert (dlib - arcface).abs().mean() > 0.05
