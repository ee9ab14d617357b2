"""Face model registry, loaders, splits, pull (offline, local server) and the CLI."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from photoveil.errors import DownloadError, IntegrityError, ModelsMissing, NotFound
from photoveil.facemodels import registry
from photoveil.facemodels.packages import NpmPackage
from photoveil.facemodels.pull import pull
from photoveil.paths import default_lfw_dir

RECOGNIZERS = [s.name for s in registry.list_specs() if s.role == "recognizer"]


def _maxdiff(a, b) -> float:
    if isinstance(a, dict):
        return max(_maxdiff(a[k], b[k]) for k in a)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- registry (no models needed)
def test_registry_has_required_models_and_fields():
    names = {s.name for s in registry.list_specs()}
    assert {"mobilefacenet", "mobileface", "faceres", "faceres-deep", "faceapi-resnet34", "gear", "emotion",
            "blazeface"} <= names
    for s in registry.list_specs():
        assert s.role in registry.ROLES and len(s.input_size) == 2 and s.licence == "MIT"
        assert all(isinstance(v, int) and v > 0 for v in s.split_points.values())
        if s.deep_split:  # PMT's high preset matches it: a named point deeper than the default
            assert s.split_points[s.deep_split] > s.split_points[s.default_split]
    assert set(registry.get_spec("gear").labels) == {"age", "gender", "race"}
    assert "WEAK" in registry.get_spec("mobilefacenet").notes
    with pytest.raises(NotFound, match="faceres"):
        registry.get_spec("no-such-model")


def test_load_without_pull_raises_models_missing(tmp_path):
    with pytest.raises(ModelsMissing, match="photoveil models pull"):
        registry.load("faceres", cache_dir=tmp_path)


def test_blazeface_anchor_layout():
    a = registry.blazeface_anchors(256)
    assert a.shape == (896, 2)
    assert a[0].tolist() == [8.0, 8.0] and a[511].tolist() == [248.0, 248.0] and a[512].tolist() == [16.0, 16.0]


def test_models_list_json_has_required_keys(capsys, tmp_path):
    from photoveil.cli import main

    assert main(["models", "list", "--json", "--cache-dir", str(tmp_path)]) == 0
    records = json.loads(capsys.readouterr().out)
    need = {"name", "role", "input_size", "channel_order", "normalisation", "output_size", "split_points",
            "lfw_accuracy", "licence", "package", "notes"}
    assert len(records) >= 7 and all(need <= set(r) for r in records)


# ---------------------------------------------------------------- pull against a local registry
def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture()
def local_registry(tmp_path):
    """Serve ``@test/pkg-1.0.0.tgz`` from a loopback HTTP server; yields (url, tarball bytes)."""
    blob = _tarball({"LICENSE": b"MIT", "models/m.json": b"{}", "models/m.bin": b"\0" * 64, "extra.txt": b"x"})
    root = tmp_path / "www"
    (root / "@test" / "pkg" / "-").mkdir(parents=True)
    (root / "@test" / "pkg" / "-" / "pkg-1.0.0.tgz").write_bytes(blob)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    SimpleHTTPRequestHandler.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", blob
    server.shutdown()


def _pkg(integrity: str) -> NpmPackage:
    return NpmPackage(key="pkg", name="@test/pkg", version="1.0.0", integrity=integrity, licence="MIT")


def test_pull_verifies_and_extracts_only_needed_files(local_registry, tmp_path):
    url, blob = local_registry
    good = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    files = {_pkg(good): ("models/m.json", "models/m.bin")}
    root = pull(tmp_path / "cache", progress=False, registry=url, packages=files)
    assert sorted(p.name for p in (root / "pkg").rglob("*") if p.is_file()) == ["LICENSE", "m.bin", "m.json"]
    marker = json.loads((root / "COMPLETE.json").read_text())
    assert marker["packages"]["pkg"]["version"] == "1.0.0"
    # complete: a second pull is a no-op even if the registry is gone
    assert pull(tmp_path / "cache", progress=False, registry="http://127.0.0.1:9", packages=files) == root


def test_pull_with_bad_integrity_leaves_nothing(local_registry, tmp_path):
    url, blob = local_registry
    bad = "sha512-" + base64.b64encode(hashlib.sha512(blob + b"tampered").digest()).decode()
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="pinned integrity"):
        pull(cache, progress=False, registry=url, packages={_pkg(bad): ("models/m.json",)})
    assert not (cache / "models").exists()
    assert list(cache.iterdir()) == []  # no partial temp dir either


def test_pull_offline_raises_download_error(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        pull(tmp_path / "c", progress=False, registry="http://127.0.0.1:9",
             packages={_pkg("sha512-AAAA"): ("models/m.json",)})
    assert list((tmp_path / "c").iterdir()) == []


# ---------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def nets(face_models_dir):
    torch.manual_seed(0)
    return {name: registry.load(name) for name in RECOGNIZERS}


@pytest.mark.parametrize("name", RECOGNIZERS)
def test_recognizer_splits_reproduce_full_forward(nets, name):
    net = nets[name]
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = torch.rand(1, 3, *net.spec.input_size)
    with torch.no_grad():
        full = net(x)
        assert full.shape == (1, net.spec.output_size)
        for point in net.spec.split_points:
            shallow, rest = net.split(point)
            h = shallow(x)
            assert isinstance(h, torch.Tensor), f"{name}:{point} is not a single-tensor cut"
            assert _maxdiff(rest(h), full) <= 1e-4, (name, point)


@pytest.mark.parametrize("name", RECOGNIZERS)
def test_recognizer_input_gradients_finite_and_nonzero(nets, name):
    net = nets[name]
    x = torch.rand(1, 3, *net.spec.input_size, requires_grad=True)
    net(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0


def test_attribute_models_and_detector_outputs(face_models_dir):
    for name in ("gear", "emotion", "blazeface"):
        net = registry.load(name)
        x = torch.rand(1, 3, *net.spec.input_size)
        with torch.no_grad():
            out = net(x)
            shallow, rest = net.split(next(iter(net.spec.split_points), 3))
            assert _maxdiff(rest(shallow(x)), out) <= 1e-4
        for key, labels in net.spec.labels.items():
            if key in out:  # probability heads sum to one
                assert out[key].shape == (1, len(labels))
                assert abs(out[key].sum().item() - 1) < 1e-4
    assert out["scores"].shape == (1, 896, 1) and out["regressors"].shape == (1, 896, 16)


def test_held_out_recognizer_is_not_faceres_under_another_name(nets):
    # faceres-deep stands for a recognizer nothing was tuned against: same architecture as
    # faceres, so its figures only mean something if its weights (and answers) are its own
    a, b = nets["faceres"].state_dict(), nets["faceres-deep"].state_dict()
    assert a.keys() == b.keys()
    moved = [k for k in a if a[k].is_floating_point() and a[k].numel() > 1 and not torch.allclose(a[k], b[k], atol=1e-3)]
    assert len(moved) >= 0.9 * sum(1 for k in a if a[k].is_floating_point() and a[k].numel() > 1)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(nets["faceres"](x), nets["faceres-deep"](x)).max() < 0.99


def test_wrong_input_size_is_rejected(nets):
    with pytest.raises(Exception, match=r"expects \[N,3,150,150\]"):
        nets["faceapi-resnet34"](torch.rand(1, 3, 112, 112))


def test_faceapi_resnet34_exports(nets):
    net = nets["faceapi-resnet34"]
    shallow, _ = net.split("block3")
    x = torch.rand(1, 3, 150, 150)
    ep = torch.export.export(shallow, (x,))
    assert _maxdiff(ep.module()(x), shallow(x)) <= 1e-5
    # no weight arithmetic in the graph: convs read parameters directly (XNNPACK constants)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("mul" in t or "permute" in t for t in targets), targets


def _lfw_pairs(n_each: int, seed: int = 0):
    root = default_lfw_dir()
    lines = [ln.split() for ln in (root / "pairs.txt").read_text().splitlines() if ln.strip()]
    rng = random.Random(seed)
    same = rng.sample([ln for ln in lines if len(ln) == 3], n_each)
    diff = rng.sample([ln for ln in lines if len(ln) == 4], n_each)
    img = lambda n, i: root / "images" / n / f"{n}_{int(i):04d}.jpg"  # noqa: E731
    return ([(img(a, i), img(a, j), True) for a, i, j in same]
            + [(img(a, i), img(b, j), False) for a, i, b, j in diff])


def _centre_crop(path, crop: int, size: int) -> torch.Tensor:
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    box = ((w - crop) // 2, (h - crop) // 2, (w - crop) // 2 + crop, (h - crop) // 2 + crop)
    arr = np.asarray(im.crop(box).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)


@pytest.mark.skipif(not (default_lfw_dir() / "pairs.txt").is_file(), reason="LFW not available")
def test_faceres_separates_same_from_different_people(nets):
    """Centre-cropped LFW pairs: same-person cosine similarity clearly above different-person."""
    pairs = _lfw_pairs(12)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    with torch.no_grad():
        emb = torch.nn.functional.normalize(nets["faceres"](torch.stack([_centre_crop(p, 150, 224) for p in paths])))
    idx = {p: i for i, p in enumerate(paths)}
    sims = np.array([float(emb[idx[a]] @ emb[idx[b]]) for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    best = max(((sims >= t) == same).mean() for t in sims)
    assert best >= 0.9 and sims[same].mean() - sims[~same].mean() > 0.15


def test_faceres_gets_bgr_0_255(nets):
    """faceres was trained on OpenCV (BGR) images: the wrapper hands its graph BGR x 255."""
    net = nets["faceres"]
    assert net.spec.channel_order == "BGR"
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.post(net.body(x.flip(1) * 255.0)))
        assert not torch.allclose(net(x), net(x.flip(1)), atol=1e-3)
