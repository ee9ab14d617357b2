"""One ``photoveil protect`` run over photos: find every face, protect it, paste it back,
write the outputs under safe names and the run manifest ``photoveil-run.json``.

Two passes: first every photo is read and its faces found and aligned (cheap; the crops
are kept, the photos are not), so FMD's gallery can hold every input face; then per photo
its faces are protected in one batch, pasted back into the re-read photo and written.
Each photo prints one progress line (faces, seconds per face); the run ends with a table
of the failures and the counts of faces detected, protected and skipped.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from photoveil.client.photos import (MIN_FACE_PX, Plan, collect, find_faces, plan, read_photo, save_png,
                                     unsupported_reason, write_photo)
from photoveil.errors import InvalidInput, PhotoveilError

MANIFEST_NAME = "photoveil-run.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def manifest_path(args) -> Path:
    if args.out:
        return Path(args.out) / MANIFEST_NAME
    first = Path(args.inputs[0])
    return (first if first.is_dir() else first.parent) / MANIFEST_NAME


def run(args, values: dict, build_protector, detector_factory, size: int, model: str) -> tuple[dict, int]:
    """Protect every photo ``args`` name; returns ``(manifest, exit code)``.

    ``build_protector(faces)`` builds the protector (FMD enrols ``faces``);
    ``detector_factory()`` the face detector (only called with landmarks alignment).
    """
    import torch

    from photoveil.client.protect.factory import build_config
    from photoveil.facemodels.align import model_template

    out = None if args.in_place else Path(args.out)
    found = collect(args.inputs, exclude=out)
    if not (found.photos or found.outputs or found.unsupported):
        raise InvalidInput(f"no photos found in {', '.join(args.inputs)}")
    kind, zoom = model_template(model)
    config = build_config(args.method, args.preset, values).to_dict()
    manifest = {
        "version": 1, "started": _now(), "method": args.method, "preset": args.preset,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
        "models": args.models, "alignment": args.alignment,
        "template": {"kind": kind, "zoom": zoom, "size": size}, "format": args.format,
        "quality": args.quality if args.format == "jpg" else None,
        "inputs": [], "failures": [], "summary": {}}
    failures, entries = manifest["failures"], manifest["inputs"]

    def fail(path, reason):
        failures.append({"input": str(path), "reason": reason})
        entries.append({"input": str(path), "status": "failed", "reason": reason})

    for f in found.unsupported:
        fail(f, unsupported_reason(f))
    for f in found.outputs:
        entries.append({"input": str(f), "status": "skipped", "reason": "a photoveil output of an earlier run"})
    todo: list[tuple[Plan, list]] = []
    detector = None
    plans = plan(found.photos, out, args.method, "jpg" if args.format == "jpg" else "png")
    for p in plans:
        if p.photo.exists() and not args.overwrite:
            entries.append({"input": str(p.source), "status": "skipped", "photo": str(p.photo),
                            "reason": f"already protected: {p.photo} exists (--overwrite to redo it)"})
            continue
        if detector is None and args.alignment == "landmarks":  # not loaded when everything is skipped
            detector = detector_factory()
        try:
            faces = find_faces(read_photo(p.source), size, args.alignment, model, detector)
        except PhotoveilError as exc:
            fail(p.source, str(exc))
            continue
        if not faces:
            fail(p.source, "no face detected (BlazeFace over the whole photo and tiles; faces under about "
                           "2 % of the long side or turned away are missed); try --alignment center or none")
            continue
        for k, face in enumerate(faces):
            if args.alignment == "landmarks" and face.width < MIN_FACE_PX:
                _say(f"photoveil protect: warning: {p.source}: face {k} is only {face.width:.0f} px wide "
                     f"(< {MIN_FACE_PX} px): it is aligned from few pixels and protected at low resolution")
        todo.append((p, faces))
    manifest["summary"] = summary = {"photos": len(found.photos) + len(found.outputs) + len(found.unsupported),
                                     "faces_detected": sum(len(f) for _, f in todo), "faces_protected": 0,
                                     "faces_skipped": 0, "photos_protected": 0,
                                     "photos_skipped": sum(e["status"] == "skipped" for e in entries),
                                     "photos_failed": len(failures)}
    if todo:
        crops = torch.stack([face.crop for _, faces in todo for face in faces])
        protector = build_protector(crops)
        feature_meta = None
        for i, (p, faces) in enumerate(todo, 1):
            t0 = time.perf_counter()
            try:
                entry, feature_meta = _protect_one(args, protector, p, faces, size)
            except PhotoveilError as exc:
                fail(p.source, str(exc))
                summary["faces_skipped"] += len(faces)
                continue
            dt = time.perf_counter() - t0
            entry["seconds"] = round(dt, 3)
            entry["seconds_per_face"] = round(dt / len(faces), 3)
            entries.append(entry)
            summary["faces_protected"] += len(faces)
            summary["photos_protected"] += 1
            _say(f"[{i}/{len(todo)}] {p.source}: {len(faces)} face(s), {entry['seconds_protecting'] / len(faces):.2f} s/face "
                 f"protecting, {dt:.1f} s with reading, pasting and writing -> {p.photo}")
        if feature_meta is not None:
            manifest["features"] = feature_meta
            root = Path(args.out) if args.out else manifest_path(args).parent
            (root / "features.json").write_text(json.dumps(feature_meta, indent=1) + "\n")
    summary["photos_failed"] = len(failures)
    manifest["finished"] = _now()
    path = manifest_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["manifest"] = str(path)
    return manifest, 1 if failures else 0


def _protect_one(args, protector, p: Plan, faces: list, size: int) -> tuple[dict, dict | None]:
    import torch

    from photoveil.facemodels.regions import paste_back

    batch = torch.stack([f.crop for f in faces])
    t0 = time.perf_counter()
    protected = protector.protect(batch)
    feats = protector.features_of(protected) if args.features else None
    protect_s = time.perf_counter() - t0
    photo = read_photo(p.source)
    additive = args.method != "pmt"  # FMD / generator perturb the face; PMT's output replaces it
    regions = [paste_back(photo, protected[k], face.matrix, original=batch[k] if additive else None)
               for k, face in enumerate(faces)]
    write_photo(photo, p.photo, args.format, args.quality)
    out_faces, meta = [], None
    for k, face in enumerate(faces):
        crop_path = p.face(k, args.method, ".png")
        save_png(protected[k], crop_path)
        record = {**face.to_json(), "region": list(regions[k]) if regions[k] else None, "crop": str(crop_path)}
        if feats is not None:
            npy = p.face(k, args.method, ".npy")
            np.save(npy, feats[k].cpu().numpy())
            record["features"] = str(npy)
        out_faces.append(record)
    if feats is not None:
        uploader = protector.uploaders[0]
        meta = {"model": uploader.name, "split": uploader.points[-1], "shape": list(feats.shape[1:]),
                "dtype": "float32"}
    return {"input": str(p.source), "status": "protected", "photo": str(p.photo),
            "size": [int(photo.shape[1]), int(photo.shape[0])], "faces": out_faces,
            "seconds_protecting": round(protect_s, 3)}, meta


def print_report(manifest: dict) -> None:
    """The failure table (rich) and the counts, on stderr."""
    s = manifest["summary"]
    if manifest["failures"]:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="photos not protected", show_lines=False)
        table.add_column("photo", overflow="fold")
        table.add_column("reason", overflow="fold")
        for f in manifest["failures"]:
            table.add_row(f["input"], f["reason"])
        Console(file=sys.stderr, width=120).print(table)
    _say(f"protected {s['faces_protected']} of {s['faces_detected']} face(s) detected in {s['photos_protected']} "
         f"photo(s) with {manifest['method']}; {s['faces_skipped']} face(s) skipped; {s['photos_skipped']} photo(s) "
         f"skipped, {s['photos_failed']} failed; manifest {manifest['manifest']}")


__all__ = ["run", "print_report", "MANIFEST_NAME", "manifest_path"]
