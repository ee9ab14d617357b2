"""``photoveil demo``: the whole split system on one machine, end to end.

Provider side: export the protection programs for the authorized recognizer (cached
between runs), sign them with a fresh ECDSA P-256 key, start the gRPC server on a free
loopback port with a bearer token, and enrol two clean photos of each bundled identity.

Phone side, for every available method: pull the signed artifact and verify it with the
provider's public key, align the held-out photo of each identity, protect it on the
ExecuTorch runtime, then upload the protected image (PNG) or only its shallow features and
read the server's answer. What an unauthorized service would conclude from the same
protected image is measured with the other recognizers (each against its own gallery of
the clean enrolment photos; by default faceres, mobileface and faceres-deep, the one no
method, preset or generator was tuned against). A clean upload is the baseline row.

Each method runs at its recommended preset (``RECOMMENDED_PRESETS``: pmt ``high``, fmd
``mid`` = eps 16, generator ``high`` = strength 1; ``--preset`` picks one for all), on the
20-identity fixture ``photoveil/assets/demo_faces`` (identities no shipped generator was
trained on; ``--faces`` takes another identity folder). FMD's authorized classifier is the
provider's model with a head over the enrolled demo identities.

The table reports, per (method, upload mode): the preset, how many identities the
authorized server recognised (top-1), what each unauthorized recognizer got right (chance:
one in the number of identities), what each got right on the *normalised* protected image
(the readability witness of :mod:`photoveil.readability`: standardised, median-filtered,
gray; what a person sees for free), SSIM, readable SSIM and out-of-focus SSIM
(``readability.BLURRED``: what a squint sees) to the original, median on-device protection
time and bytes sent per request. With ``--out`` (or ``--sheet``) a contact sheet PNG shows
original | protected per method, the same normalised, and out of focus.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from photoveil.client.protect.base import PRESET_NAMES, RECOMMENDED_PRESETS
from photoveil.client.protect.flags import resolve_preset

DEFAULT_MODEL = "faceapi-resnet34"
PRESET_CHOICES = ("recommended", *PRESET_NAMES)
SHEET_ROWS = 6
# faceres-deep: the held-out recognizer, one that no method, preset or generator was tuned against
DEFAULT_UNAUTHORIZED = ("faceres", "mobileface", "faceres-deep")
METHODS = ("pmt", "fmd", "generator")
PROGRAM_OF = {"pmt": "pmt-step", "fmd": "fmd-step", "generator": "generator"}
TOKEN_ENV = "PHOTOVEIL_DEMO_TOKEN"
ENROLLED_PER_ID = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: server + phone side on bundled sample faces",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="pmt,fmd,generator",
                   help=f"comma list of {', '.join(METHODS)} (generator runs when a face generator is shipped)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the provider's (authorized) recognizer")
    p.add_argument("--unauthorized", default=",".join(DEFAULT_UNAUTHORIZED),
                   help="comma list of recognizers playing unauthorized services")
    p.add_argument("--workdir", help="artifact cache and phone storage (default: <cache>/demo)")
    p.add_argument("--rebuild", action="store_true", help="export the programs again even if cached")
    p.add_argument("--threads", type=int, default=None, help="ExecuTorch threads on the phone side")
    p.add_argument("--preset", choices=PRESET_CHOICES, default="recommended",
                   help="preset of every method; recommended = " +
                        ", ".join(f"{m} {v}" for m, v in RECOMMENDED_PRESETS.items()) + " [recommended]")
    p.add_argument("--generator", default="face",
                   help="face generator for the generator row: shipped name or checkpoint path [face]")
    p.add_argument("--faces", help="identity folder of sample photos, >= 3 per identity "
                                   "(default: the bundled 20-identity fixture)")
    p.add_argument("--out", help="folder for demo.json, demo.md and contact_sheet.png")
    p.add_argument("--sheet", help="also write the contact sheet PNG here (default <out>/contact_sheet.png)")
    p.add_argument("--json", action="store_true", help="print the records as JSON lines")
    p.add_argument("--cache-dir", help="face-model cache (default $PHOTOVEIL_CACHE or the user cache)")
    p.set_defaults(func=main)


@dataclass
class Row:
    method: str
    upload: str
    authorized_correct: int = 0
    n: int = 0
    unauthorized_correct: dict[str, int] = field(default_factory=dict)
    preset: str = "-"
    ssim: list[float] = field(default_factory=list)
    readable_ssim: list[float] = field(default_factory=list)
    readable_ssim_blur: list[float] = field(default_factory=list)
    readable_correct: dict[str, int] = field(default_factory=dict)
    device_ms: list[float] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        med = lambda v: round(statistics.median(v), 1) if v else None  # noqa: E731
        return {"method": self.method, "upload": self.upload, "preset": self.preset, "n": self.n,
                "authorized_correct": self.authorized_correct,
                "unauthorized_correct": self.unauthorized_correct,
                "readable_unauthorized_correct": self.readable_correct,
                "ssim": round(statistics.mean(self.ssim), 4) if self.ssim else None,
                "readable_ssim": round(statistics.mean(self.readable_ssim), 4) if self.readable_ssim else None,
                "readable_ssim_blur": (round(statistics.mean(self.readable_ssim_blur), 4)
                                       if self.readable_ssim_blur else None),
                "device_ms_p50": med(self.device_ms),
                "bytes_per_request": int(statistics.mean(self.bytes_sent)) if self.bytes_sent else None,
                "answers": self.answers}


def _parse_list(text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    from photoveil.errors import InvalidInput

    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if allowed is not None and t not in allowed]
    if bad or (allowed is not None and not items):
        raise InvalidInput(f"{what} {', '.join(bad) or '(empty)'} not accepted; choose from {', '.join(allowed)}")
    return items


def presets_for(methods: list[str], preset: str = "recommended") -> dict[str, str]:
    """The preset each method runs at: ``RECOMMENDED_PRESETS`` or ``preset`` for all."""
    return {m: resolve_preset(m, preset) for m in methods}


def build_artifacts(root: Path, model: str, methods: list[str], rebuild: bool = False, cache_dir=None,
                    log=print, presets: dict[str, str] | None = None, gallery=None,
                    generator: str = "face") -> list[str]:
    """Export (or reuse) the programs the demo publishes under ``root``; their ids.

    ``presets``: method -> preset (default: the recommended ones); ``gallery``: ``(images,
    labels)`` FMD's authorized head is built over (default: the bundled FMD gallery). A cached
    program is reused only if it was exported for the same model, preset and gallery."""
    import shutil

    from photoveil import __version__
    from photoveil.artifact import read_manifest
    from photoveil.client.protect import get_protector
    from photoveil.client.protect.factory import fmd_classifier
    from photoveil.client.protect.generator import shipped_generators
    from photoveil.errors import PhotoveilError
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program
    from photoveil.facemodels import registry

    size = registry.get_spec(model).input_size[0]
    presets = {**presets_for(methods), **(presets or {})}
    config = {m: get_protector(m).preset_config(presets[m]) for m in methods}
    keys = {"shallow": "", "pmt-step": repr(config.get("pmt")), "generator": repr(config.get("generator"))}
    # artifact id -> (the model id its manifest must name to be reused, how to build it)
    wanted = {"shallow": (model, lambda: P.shallow_program(model, cache_dir=cache_dir))}
    if "pmt" in methods:
        wanted["pmt-step"] = (model, lambda: P.pmt_step_program(model, config=config["pmt"], cache_dir=cache_dir))
    if "fmd" in methods:
        digest = "" if gallery is None else hashlib.sha256(
            gallery[0].contiguous().numpy().tobytes() + repr(gallery[1].tolist()).encode()).hexdigest()[:16]
        keys["fmd-step"] = f"{config['fmd']!r} gallery={digest}"

        def fmd():
            clf, model_id, split = fmd_classifier(model, gallery=gallery, cache_dir=cache_dir)
            return P.fmd_step_program(clf, config=config["fmd"], size=size, model_id=model_id, split=split)
        wanted["fmd-step"] = (model, fmd)
    checkpoint = shipped_generators().get(generator) or (Path(generator) if Path(generator).is_file() else None)
    if "generator" in methods and checkpoint is not None:
        # the checkpoint's digest in the id: a cached program of an older face.pt is rebuilt
        gen_id = f"face-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}@{model}"

        def gen():
            from photoveil.nets.unet import load_generator

            net, _ = load_generator(checkpoint)
            return P.generator_program(net.eval(), size=size, strength=config["generator"].strength,
                                       model_id=gen_id)
        wanted["generator"] = (gen_id, gen)
    for artifact_id, (model_id, make) in wanted.items():
        folder = root / artifact_id
        key_file = root / f"{artifact_id}.demo-key"  # beside the folder: the signed files stay as exported
        if not rebuild:
            try:
                m = read_manifest(folder)
            except PhotoveilError:
                m = None  # none yet, or unreadable: export it again
            same_key = key_file.is_file() and key_file.read_text() == keys[artifact_id]
            if m is not None and m.photoveil_version == __version__ and m.model_id == model_id and same_key:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        log(f"provider: exporting {artifact_id} for {model} (first run only; about a minute) ...")
        prog = make()
        export_program(prog.module, prog.inputs, prog.options, folder)
        key_file.write_text(keys[artifact_id])
    return list(wanted)


def faces_dir(path: str | os.PathLike | None = None) -> Path:
    """The sample-photo folder (default: the bundled 20-identity fixture), checked before any
    model loads: InvalidInput unless it holds >= 2 identities with >= 3 photos each."""
    from photoveil.errors import InvalidInput
    from photoveil.paths import ASSETS

    root = Path(path) if path else ASSETS / "demo_faces"
    if not root.is_dir():
        raise InvalidInput(f"--faces {root}: no such folder")
    usable = [p for p in root.iterdir() if p.is_dir()
              and len(list(p.glob("*.jpg")) + list(p.glob("*.png"))) > ENROLLED_PER_ID]
    if len(usable) < 2:
        raise InvalidInput(f"--faces {root}: needs >= 2 identity folders with >= {ENROLLED_PER_ID + 1} "
                           f"photos (.jpg/.png) each, found {len(usable)}")
    return root


def _faces(model: str, cache_dir=None, root: Path | None = None):
    """Sample faces aligned for ``model``: ``(names, enrol [K,3,H,W], enrol_names, query [N,3,H,W])``."""
    import torch

    from photoveil.facemodels import registry
    from photoveil.facemodels.align import align_faces

    size = registry.get_spec(model).input_size[0]
    folders = sorted(p for p in faces_dir(root).iterdir() if p.is_dir())
    enrol, enrol_names, query, names = [], [], [], []
    for folder in folders:
        photos = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
        if len(photos) <= ENROLLED_PER_ID:
            continue
        aligned = align_faces(photos, size, model=model, cache_dir=cache_dir)
        enrol.append(aligned[:ENROLLED_PER_ID])
        enrol_names += [folder.name] * ENROLLED_PER_ID
        query.append(aligned[ENROLLED_PER_ID:ENROLLED_PER_ID + 1])
        names.append(folder.name)
    return names, torch.cat(enrol), enrol_names, torch.cat(query)


class Eavesdroppers:
    """Unauthorized recognizers, each with a gallery of the clean enrolment crops (the
    uploads an eavesdropper has seen before); ``top1(protected)`` is what each would
    conclude from an intercepted upload. The crops are aligned for the authorized ``source``
    model; each eavesdropper re-aligns them onto its own template first, as a service running
    its own aligner would (:func:`photoveil.facemodels.align.realign`)."""

    def __init__(self, models: list[str], enrol, enrol_names: list[str], cache_dir=None,
                 source: str = DEFAULT_MODEL):
        import torch

        from photoveil.facemodels import registry

        self.source = source
        self.labels = sorted(set(enrol_names))
        self.nets, self.centroids = {}, {}
        for name in models:
            self.nets[name] = registry.load(name, cache_dir=cache_dir).eval()
            emb = self._embed(name, enrol)
            rows = [emb[[i for i, n in enumerate(enrol_names) if n == lab]].mean(0) for lab in self.labels]
            self.centroids[name] = torch.nn.functional.normalize(torch.stack(rows), dim=1)

    def _embed(self, name, images):
        import torch

        from photoveil.facemodels.align import realign
        from photoveil.facemodels.embed import embed
        from photoveil.imageops import input_hw

        net = self.nets[name]
        return torch.nn.functional.normalize(embed(net, realign(images, self.source, name, input_hw(net)[0])), dim=1)

    def top1(self, images) -> dict[str, list[str]]:
        """Each recognizer's top-1 identity per image."""
        return {name: [self.labels[i] for i in (self._embed(name, images) @ self.centroids[name].T).argmax(1).tolist()]
                for name in self.nets}


def run_demo(methods: list[str], model: str = DEFAULT_MODEL, unauthorized: list[str] | None = None,
             workdir: str | os.PathLike | None = None, rebuild: bool = False, threads: int | None = None,
             cache_dir=None, log=print, preset: str = "recommended", faces: str | os.PathLike | None = None,
             sheet: str | os.PathLike | None = None, generator: str = "face") -> list[dict]:
    """Run the demo; one record per (method, upload mode), the clean baseline first.
    ``sheet``: write the contact sheet PNG there."""
    import torch
    from pytorch_msssim import ssim

    from photoveil.readability import BLURRED, readable_ssim, recognizer_view

    from photoveil import wire
    from photoveil.client.phone import Phone
    from photoveil.client.transport import RecognitionClient
    from photoveil.facemodels.pull import ensure_models
    from photoveil.paths import cache_dir as default_cache
    from photoveil.server.app import build_server
    from photoveil.server.config import AuthConfig, ModelConfig, ServerConfig
    from photoveil.server.health import wait_serving
    from photoveil.signing import keygen, sign_artifact

    unauthorized = list(DEFAULT_UNAUTHORIZED if unauthorized is None else unauthorized)
    ensure_models(cache_dir)
    work = Path(workdir) if workdir else default_cache(cache_dir) / "demo"
    artifacts = work / "artifacts"
    presets = presets_for(methods, preset)
    names, enrol, enrol_names, query = _faces(model, cache_dir, faces)
    labels = sorted(set(enrol_names))
    gallery = (enrol, torch.tensor([labels.index(n) for n in enrol_names]))
    published = build_artifacts(artifacts, model, methods, rebuild, cache_dir, log, presets, gallery, generator)
    skipped = [m for m in methods if PROGRAM_OF[m] not in published]
    for m in skipped:
        log(f"provider: no {m} artifact (no shipped face generator: `photoveil generator train` makes one)")

    with tempfile.TemporaryDirectory(prefix="photoveil-demo-") as tmp:
        tmp = Path(tmp)
        private, public = keygen(tmp / "keys" / "provider")
        for artifact_id in published:
            sign_artifact(artifacts / artifact_id, private)
        token = secrets.token_urlsafe(24)
        os.environ[TOKEN_ENV] = token
        config = ServerConfig(bind="127.0.0.1:0", models=[ModelConfig(id=model)], artifacts_dir=str(artifacts),
                              gallery_path=str(tmp / "gallery.sqlite3"), auth=AuthConfig(token_env=TOKEN_ENV),
                              grace_s=5.0)
        log(f"provider: starting the server with {model} ...")
        server, port = build_server(config)
        server.start()
        target = f"127.0.0.1:{port}"
        try:
            wait_serving(target)
            log(f"provider: serving on {target}; enrolling the clean sample photos")
            rpc = RecognitionClient(target, token=token)
            for image, name in zip(enrol, enrol_names):
                rpc.enroll(model, name, wire.encode_image(image, "PNG"))
            log(f"phone: {len(names)} held-out photos; unauthorized services: {', '.join(unauthorized) or 'none'}")
            spies = Eavesdroppers(unauthorized, enrol, enrol_names, cache_dir, source=model) if unauthorized else None
            phone = Phone(rpc, public, tmp / "phone", threads=threads)
            shallow = phone.install("shallow")
            rows, shown = [], {"original": query}

            def evaluate(method: str, protected: torch.Tensor, ms: list[float], source) -> None:
                """``source``: the installed program computing the upload features (its split)."""
                s = [float(ssim(p[None], q[None], data_range=1.0)) for p, q in zip(protected, query)]
                rs = readable_ssim(query, protected).tolist()
                bs = readable_ssim(query, protected, BLURRED).tolist()
                seen = spies.top1(protected) if spies else {}
                seen_normalised = spies.top1(recognizer_view(protected)) if spies else {}
                for upload in ("image", "features"):
                    row = Row(method, upload, n=len(names), preset=presets.get(method, "-"), ssim=s,
                              readable_ssim=rs, readable_ssim_blur=bs, device_ms=ms)
                    for i, name in enumerate(names):
                        if upload == "image":
                            answer = phone.upload_image(model, protected[i:i + 1])
                        else:
                            answer = phone.upload_features(model, source.split,
                                                           Phone.features(source, protected[i:i + 1]))
                        row.authorized_correct += answer.top1 == name
                        row.bytes_sent.append(answer.bytes_sent)
                        row.answers.append({"identity": name, "server_top1": answer.top1,
                                            "score": round(answer.scores[0], 4) if answer.scores else None})
                    for spy, top in seen.items():
                        row.unauthorized_correct[spy] = sum(a == b for a, b in zip(top, names))
                        row.readable_correct[spy] = sum(a == b for a, b in zip(seen_normalised[spy], names))
                    rows.append(row)

            evaluate("none", query, [], shallow)
            for method in methods:
                if method in skipped:
                    continue
                log(f"phone: installing + verifying {PROGRAM_OF[method]}, protecting {len(names)} faces ...")
                installed = phone.install(PROGRAM_OF[method], seed=0, progress=False)
                outs, ms = [], []
                for i in range(len(names)):
                    protected, t = phone.protect(installed, query[i:i + 1])
                    outs.append(protected)
                    ms.append(t)
                protected = torch.cat(outs)
                shown[method] = protected
                # a pmt-step program computes its own upload features; other methods use the shallow program
                evaluate(method, protected, ms, installed if hasattr(installed.runner, "features_of") else shallow)
            rpc.close()
        finally:
            server.stop(5.0)
            os.environ.pop(TOKEN_ENV, None)
    log("provider: server stopped")
    if sheet is not None:
        contact_sheet(sheet, names, shown)
        log(f"contact sheet: {sheet}")
    return [r.record() for r in rows]


def contact_sheet(path: str | os.PathLike, names: list[str], columns: dict, rows: int = SHEET_ROWS,
                  tile: int = 96) -> Path:
    """PNG: for the first ``rows`` identities, ``columns`` (label -> ``[N,3,H,W]``, the original
    first) side by side, then the same images after the readability normalisation, then out
    of focus (:data:`photoveil.readability.BLURRED`)."""
    import torch
    from PIL import Image, ImageDraw

    from photoveil.imageops import resize_to
    from photoveil.readability import BLURRED, recognizer_view

    labels = list(columns)
    k = min(rows, len(names))
    head, gap = 16, 8
    blocks = {"as uploaded": lambda t: t,
              "normalised (standardised, median, gray): what an eye reads": recognizer_view,
              "out of focus (blurred luminance): what a squint reads": lambda t: recognizer_view(t, BLURRED)}
    width = len(blocks) * len(labels) * tile + (len(blocks) - 1) * gap
    sheet = Image.new("RGB", (width, head * 2 + k * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for block, (title, transform) in enumerate(blocks.items()):
        x0 = block * (len(labels) * tile + gap)
        draw.text((x0 + 4, 2), title, fill="black")
        for j, label in enumerate(labels):
            draw.text((x0 + j * tile + 4, head + 1), label, fill="black")
            images = resize_to(transform(columns[label][:k].float()), (tile, tile)).clamp(0, 1)
            for i, img in enumerate(images):
                arr = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                sheet.paste(Image.fromarray(arr), (x0 + j * tile, head * 2 + i * tile))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


CHANCE_LEVEL = 0.05
"""An unauthorized count is marked "(chance)" when guessing would reach it with probability
above this (one-sided exact binomial test, chance = 1 / enrolled identities)."""


def count(k: int, n: int) -> str:
    """``k/n``, marked ``(chance)`` when ``k`` right of ``n`` is consistent with guessing."""
    from photoveil.evaluation.metrics import above_chance_p

    return f"{k}/{n}" + (" (chance)" if above_chance_p(k, n, 1 / n) > CHANCE_LEVEL else "")


def table(records: list[dict]) -> str:
    spies = sorted({k for r in records for k in r["unauthorized_correct"]})
    head = ["method", "preset", "upload", "authorized right", *[f"{s} right" for s in spies],
            *[f"{s} right, normalised" for s in spies], "SSIM", "readable SSIM", "out-of-focus SSIM",
            "on-device ms", "bytes sent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        n = r["n"]
        unauth = [count(r["unauthorized_correct"][s], n) if r["upload"] == "image" else "sees features only"
                  for s in spies]
        normalised = [count(r["readable_unauthorized_correct"][s], n) if r["upload"] == "image" else "-"
                      for s in spies]
        lines.append("| " + " | ".join([
            r["method"], r.get("preset", "-"), r["upload"], f"{r['authorized_correct']}/{n}", *unauth, *normalised,
            f"{r['ssim']:.3f}" if r["ssim"] is not None else "-",
            f"{r['readable_ssim']:.3f}" if r.get("readable_ssim") is not None else "-",
            f"{r['readable_ssim_blur']:.3f}" if r.get("readable_ssim_blur") is not None else "-",
            f"{r['device_ms_p50']:.0f}" if r["device_ms_p50"] is not None else "-",
            str(r["bytes_per_request"])]) + " |")
    return "\n".join(lines)


def main(args) -> int:
    import sys

    from photoveil.facemodels import registry

    methods = _parse_list(args.methods, METHODS, "--methods")
    unauthorized = _parse_list(args.unauthorized, None, "--unauthorized")
    for name in [args.model, *unauthorized]:
        registry.get_spec(name)  # NotFound names the registry's models
    faces = faces_dir(args.faces)  # InvalidInput (exit 2) before any model loads
    if "generator" in methods and args.generator != "face":
        from photoveil.client.protect.generator import GeneratorProtector

        GeneratorProtector._resolve(args.generator)  # NotFound (exit 2) names the shipped ones
    sheet = args.sheet or (str(Path(args.out) / "contact_sheet.png") if args.out else None)
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = run_demo(methods, args.model, unauthorized, args.workdir, args.rebuild, args.threads, args.cache_dir,
                       log=log, preset=args.preset, faces=faces, sheet=sheet, generator=args.generator)
    md = table(records)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(md)
        n = len(records[0]["answers"])
        print(f"\n{n} held-out identities (chance {1 / n:.2f}; \"(chance)\": guessing gets that many right with "
              f"p > {CHANCE_LEVEL}); authorized = {args.model}; "
              f"unauthorized = {', '.join(unauthorized)}; presets: "
              + ", ".join(f"{m} {p}" for m, p in presets_for(methods, args.preset).items())
              + f"; {time.perf_counter() - t0:.0f} s in all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo.json").write_text(json.dumps(records, indent=2) + "\n")
        (out / "demo.md").write_text(md + "\n")
    return 0
