"""``photoveil models eval``: LFW verification accuracy of the face recognizers.

The LFW protocol (Huang et al., UMass TR 07-49, 2007, "unrestricted" View 2): each
pair gets the cosine similarity of the two L2-normalised embeddings (optionally the sum
of the image's and its mirror image's embeddings, as ArcFace reports LFW), the pairs are
cut into 10 contiguous folds (the official View-2 folds are contiguous blocks of the
file), the threshold is chosen on 9 folds and scored on the 10th; the accuracy is the
mean +/- std over the folds. ROC AUC is computed over all pairs (torchmetrics).

With ``--update-registry`` the figures go to ``photoveil/assets/lfw_accuracy.json``
(model -> {accuracy, std, auc, pairs, alignment, command, ...}), which
``photoveil models list`` shows. The verification metrics (:func:`kfold_accuracy`,
:func:`best_threshold`, :func:`roc_auc`) are shared with the evaluation runner. Only
:func:`add_arguments` and :func:`main` are needed at CLI start-up; torch is imported when
the command runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from photoveil.errors import InvalidInput
from photoveil.facemodels.registry import list_specs
from photoveil.paths import ASSETS

RECOGNIZERS = tuple(s.name for s in list_specs() if s.role == "recognizer")
ACCURACY_FILE = ASSETS / "lfw_accuracy.json"
ALIGNMENT_CHOICES = ("landmarks", "center", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``photoveil models eval``."""
    parser.add_argument("--models", nargs="+", metavar="NAME", default=None,
                        help=f"recognizers to evaluate (default: all: {', '.join(RECOGNIZERS)})")
    parser.add_argument("--data", type=Path, default=None,
                        help="LFW root holding pairs.txt and images/Name/Name_0001.jpg "
                             "(default: $PHOTOVEIL_LFW or the shared copy)")
    parser.add_argument("--pairs-file", type=Path, default=None,
                        help="pairs file in LFW View-2 format (default: DATA/pairs.txt)")
    parser.add_argument("--pairs", type=int, default=None, metavar="N",
                        help="evaluate a fixed seeded subset of N pairs (same/different "
                             "proportion kept; default: all pairs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --pairs subset (default 0)")
    parser.add_argument("--alignment", choices=ALIGNMENT_CHOICES, default="landmarks",
                        help="landmarks: BlazeFace keypoints -> ArcFace template (default); "
                             "center: plain centre crop; none: resize only")
    parser.add_argument("--zoom", type=float, default=None,
                        help="override the per-model landmark template zoom (0.2-5; <1 = looser crop)")
    parser.add_argument("--template", choices=("arcface", "dlib"), default=None,
                        help="override the per-model landmark template (ArcFace 5-point or dlib face chip)")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="do not add the mirror image's embedding")
    parser.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache-dir", default=None,
                        help="model/detection cache (default: $PHOTOVEIL_CACHE or the user cache dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON results to FILE")
    parser.add_argument("--update-registry", action="store_true",
                        help=f"record the figures in {ACCURACY_FILE.relative_to(ASSETS.parent.parent)}")


def _validate(args) -> None:
    models = args.models or list(RECOGNIZERS)
    unknown = [m for m in models if m not in RECOGNIZERS]
    if unknown:
        raise InvalidInput(f"unknown recognizer(s) {', '.join(unknown)}; accepted: {', '.join(RECOGNIZERS)}")
    if args.pairs is not None and args.pairs < 2 * args.folds:
        raise InvalidInput(f"--pairs must be >= {2 * args.folds} (2 per fold), got {args.pairs}")
    if not 2 <= args.folds <= 100:
        raise InvalidInput(f"--folds must be in [2, 100], got {args.folds}")
    if not 1 <= args.batch_size <= 1024:
        raise InvalidInput(f"--batch-size must be in [1, 1024], got {args.batch_size}")
    if args.zoom is not None and not 0.2 <= args.zoom <= 5.0:
        raise InvalidInput(f"--zoom must be in [0.2, 5], got {args.zoom}")
    if args.threads is not None and args.threads < 1:
        raise InvalidInput(f"--threads must be >= 1, got {args.threads}")
    args.models = models


# ------------------------------------------------------------------------------ metrics
def kfold_accuracy(scores, same, folds: int = 10) -> tuple[float, float, float]:
    """LFW protocol accuracy: threshold chosen on the other folds, scored on each fold.

    Folds are stratified and contiguous: the same pairs (in file order) and the
    different pairs are each cut into ``folds`` blocks, fold k takes block k of both.
    On LFW's View-2 file (10 x [300 same, 300 different]) these are the official folds.
    ``scores``: similarity per pair (higher = more alike); ``same``: bool per pair.
    Returns (mean accuracy, std over folds, mean threshold).
    """
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores.shape}, {same.shape}")
    if len(scores) < 2 * folds:
        raise ValueError(f"need >= {2 * folds} pairs for {folds} folds, got {len(scores)}")
    if min(same.sum(), (~same).sum()) < folds:
        raise ValueError(f"need >= {folds} same and >= {folds} different pairs for {folds} folds")
    chunks = [np.concatenate(parts) for parts in zip(np.array_split(np.flatnonzero(same), folds),
                                                     np.array_split(np.flatnonzero(~same), folds))]
    accs, thresholds = [], []
    for k in range(folds):
        train = np.concatenate([c for j, c in enumerate(chunks) if j != k])
        thr = best_threshold(scores[train], same[train])
        test = chunks[k]
        accs.append(float(((scores[test] > thr) == same[test]).mean()))
        thresholds.append(thr)
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(thresholds))


def best_threshold(scores, same) -> float:
    """The threshold maximising accuracy of ``score > t`` (midpoint between neighbours)."""
    import numpy as np

    order = np.argsort(scores)
    s, y = scores[order], same[order]
    # Accuracy when the threshold sits just below s[i]: same pairs at/above i are right,
    # different pairs below i are right.
    n_same_above = np.cumsum(y[::-1])[::-1]
    n_diff_below = np.concatenate([[0], np.cumsum(~y)[:-1]])
    correct = np.concatenate([n_same_above + n_diff_below, [int((~y).sum())]])
    i = int(np.argmax(correct))
    if i == 0:
        return float(s[0] - 1e-6)
    if i == len(s):
        return float(s[-1] + 1e-6)
    return float((s[i - 1] + s[i]) / 2.0)


def roc_auc(scores, same) -> float:
    """Area under the ROC curve of ``scores`` for the positive class ``same``."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.as_tensor(scores, dtype=torch.float64),
                              torch.as_tensor(same, dtype=torch.long)))


# ------------------------------------------------------------------------------ embedding
def input_size(net) -> int:
    size = net.spec.input_size
    return int(size[-1] if isinstance(size, (tuple, list)) else size)


def embed_paths(net, paths, alignment: str = "landmarks", flip: bool = True, batch_size: int = 32,
                model: str | None = None, zoom: float | None = None, cache_dir=None,
                desc: str = "embedding", template: str | None = None):
    """L2-normalised embeddings ``[N, D]`` of face images given by path.

    Each image is aligned for ``net``'s input size (LFW: with landmarks, the face nearest
    the image centre), ``flip`` adds the mirror image's embedding before normalising.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from photoveil.facemodels.align import align_faces
    from photoveil.facemodels.detect import default_detector

    size = input_size(net)
    detector = default_detector(cache_dir=cache_dir) if alignment == "landmarks" else None
    out = []
    with torch.no_grad(), tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr,
                               disable=None) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            x = align_faces(chunk, size, alignment=alignment, model=model, zoom=zoom,
                            detector=detector, pick="center", kind=template)
            emb = net(x).float()
            if flip:
                emb = emb + net(x.flip(-1)).float()
            out.append(F.normalize(emb.reshape(len(chunk), -1), dim=1))
            bar.update(len(chunk))
    return torch.cat(out)


def evaluate_model(name: str, pairs, alignment: str = "landmarks", flip: bool = True, folds: int = 10,
                   batch_size: int = 32, zoom: float | None = None, cache_dir=None, net=None,
                   template: str | None = None) -> dict:
    """Verification figures of recognizer ``name`` on ``pairs`` (see module docstring)."""
    import numpy as np

    from photoveil.facemodels.align import model_template

    if net is None:
        from photoveil.facemodels import registry

        net = registry.load(name, cache_dir=cache_dir)
    net.eval()
    t0 = time.perf_counter()
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    index = {p: i for i, p in enumerate(paths)}
    emb = embed_paths(net, paths, alignment, flip, batch_size, model=name, zoom=zoom,
                      cache_dir=cache_dir, desc=name, template=template)
    a = emb[[index[p.path_a] for p in pairs]]
    b = emb[[index[p.path_b] for p in pairs]]
    scores = (a * b).sum(1).double().numpy()
    same = np.array([p.same for p in pairs])
    acc, std, thr = kfold_accuracy(scores, same, folds)
    default_kind, default_zoom = model_template(name)
    used_zoom = zoom if zoom is not None else default_zoom
    return {
        "accuracy": round(acc, 4), "std": round(std, 4), "auc": round(roc_auc(scores, same), 4),
        "pairs": len(pairs), "alignment": alignment, "flip": flip, "folds": folds,
        "threshold": round(thr, 4), "zoom": used_zoom if alignment == "landmarks" else None,
        "template": (template or default_kind) if alignment == "landmarks" else None,
        "images": len(paths), "seconds": round(time.perf_counter() - t0, 1),
    }


def _command(args, name: str) -> str:
    parts = ["photoveil", "models", "eval", "--models", name, "--alignment", args.alignment]
    if args.pairs is not None:
        parts += ["--pairs", str(args.pairs), "--seed", str(args.seed)]
    if args.zoom is not None:
        parts += ["--zoom", str(args.zoom)]
    if args.template is not None:
        parts += ["--template", args.template]
    if not args.flip:
        parts.append("--no-flip")
    if args.folds != 10:
        parts += ["--folds", str(args.folds)]
    return shlex.join(parts)


def update_registry(results: dict[str, dict], path: Path = ACCURACY_FILE) -> None:
    """Merge ``results`` (model -> record) into the accuracy file atomically."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(current.items())), indent=2) + "\n")
    tmp.replace(path)


def main(args: argparse.Namespace) -> int:
    """Run ``photoveil models eval``; returns the exit code."""
    _validate(args)
    import torch

    from photoveil.data.faces import parse_pairs, subset_pairs
    from photoveil.paths import default_lfw_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or default_lfw_dir()
    pairs_file = args.pairs_file or Path(data) / "pairs.txt"
    pairs = subset_pairs(parse_pairs(pairs_file, data_root=data), args.pairs, seed=args.seed)
    if len(pairs) < 2 * args.folds:
        raise InvalidInput(f"{pairs_file} holds {len(pairs)} pairs; {args.folds}-fold CV needs >= {2 * args.folds}")
    results = {}
    for name in args.models:
        rec = evaluate_model(name, pairs, args.alignment, args.flip, args.folds, args.batch_size,
                             args.zoom, args.cache_dir, template=args.template)
        rec["command"] = _command(args, name)
        results[name] = rec
        if not args.json:
            print(f"{name:18s} accuracy {rec['accuracy']:.4f} +/- {rec['std']:.4f}  AUC {rec['auc']:.4f}  "
                  f"({rec['pairs']} pairs, {rec['alignment']}, {rec['seconds']:.0f} s)", flush=True)
    text = json.dumps(results, indent=2)
    if args.json:
        print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.update_registry:
        update_registry(results)
        if not args.json:
            print(f"recorded in {ACCURACY_FILE}")
    return 0
