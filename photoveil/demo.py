"""``photoveil demo``: the whole split system on one machine, end to end.

Provider side: export the protection programs for the authorized recognizer (cached
between runs), sign them with a fresh ECDSA P-256 key, start the gRPC server on a free
loopback port with a bearer token, and enrol two clean photos of each bundled identity.

Phone side, for every available method: pull the signed artifact and verify it with the
provider's public key, align the held-out photo of each identity, protect it on the
ExecuTorch runtime, then upload the protected image (PNG) or only its shallow features and
read the server's answer. What an unauthorized service would conclude from the same
protected image is measured with the other recognizers (each against its own gallery of
the clean enrolment photos). A clean upload is the baseline row.

The table reports, per (method, upload mode): how many identities the authorized server
recognised (top-1), what each unauthorized recognizer got right, SSIM to the original,
median on-device protection time and bytes sent per request.
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

DEFAULT_MODEL = "faceapi-resnet34"
DEFAULT_UNAUTHORIZED = ("faceres", "mobileface")
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
    p.add_argument("--out", help="folder for demo.json and demo.md")
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
    ssim: list[float] = field(default_factory=list)
    device_ms: list[float] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        med = lambda v: round(statistics.median(v), 1) if v else None  # noqa: E731
        return {"method": self.method, "upload": self.upload, "n": self.n,
                "authorized_correct": self.authorized_correct,
                "unauthorized_correct": self.unauthorized_correct,
                "ssim": round(statistics.mean(self.ssim), 4) if self.ssim else None,
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


def build_artifacts(root: Path, model: str, methods: list[str], rebuild: bool = False, cache_dir=None,
                    log=print) -> list[str]:
    """Export (or reuse) the programs the demo publishes under ``root``; their ids."""
    import shutil

    from photoveil import __version__
    from photoveil.artifact import read_manifest
    from photoveil.client.protect.factory import fmd_classifier
    from photoveil.client.protect.generator import shipped_generators
    from photoveil.errors import PhotoveilError
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program
    from photoveil.facemodels import registry

    size = registry.get_spec(model).input_size[0]
    # artifact id -> (the model id its manifest must name to be reused, how to build it)
    wanted = {"shallow": (model, lambda: P.shallow_program(model, cache_dir=cache_dir))}
    if "pmt" in methods:
        from photoveil.client.protect.factory import build_config

        wanted["pmt-step"] = (model, lambda: P.pmt_step_program(model, build_config("pmt", "mid"), cache_dir=cache_dir))
    if "fmd" in methods:
        def fmd():
            clf, model_id, split = fmd_classifier(model, cache_dir=cache_dir)
            return P.fmd_step_program(clf, size=size, model_id=model_id, split=split)
        wanted["fmd-step"] = (model, fmd)
    if "generator" in methods and "face" in shipped_generators():
        checkpoint = shipped_generators()["face"]
        # the checkpoint's digest in the id: a cached program of an older face.pt is rebuilt
        gen_id = f"face-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}@{model}"

        def gen():
            from photoveil.nets.unet import load_generator

            net, _ = load_generator(checkpoint)
            return P.generator_program(net.eval(), size=size, model_id=gen_id)
        wanted["generator"] = (gen_id, gen)
    for artifact_id, (model_id, make) in wanted.items():
        folder = root / artifact_id
        if not rebuild:
            try:
                m = read_manifest(folder)
            except PhotoveilError:
                m = None  # none yet, or unreadable: export it again
            # a pmt-step program of the loop before issue 21 (no alpha input) is exported again
            current = artifact_id != "pmt-step" or (m is not None and "alpha" in [i.get("name") for i in m.inputs])
            if m is not None and m.photoveil_version == __version__ and m.model_id == model_id and current:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        log(f"provider: exporting {artifact_id} for {model} (first run only; about a minute) ...")
        prog = make()
        export_program(prog.module, prog.inputs, prog.options, folder)
    return list(wanted)


def _faces(model: str, cache_dir=None):
    """Bundled sample faces aligned for ``model``: ``(names, enrol [K,3,H,W], enrol_names, query [N,3,H,W])``."""
    import torch

    from photoveil.facemodels import registry
    from photoveil.facemodels.align import align_faces
    from photoveil.paths import ASSETS

    size = registry.get_spec(model).input_size[0]
    folders = sorted(p for p in (ASSETS / "faces").iterdir() if p.is_dir())
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
    conclude from an intercepted upload."""

    def __init__(self, models: list[str], enrol, enrol_names: list[str], cache_dir=None):
        import torch

        from photoveil.facemodels import registry

        self.labels = sorted(set(enrol_names))
        self.nets, self.centroids = {}, {}
        for name in models:
            self.nets[name] = registry.load(name, cache_dir=cache_dir).eval()
            emb = self._embed(name, enrol)
            rows = [emb[[i for i, n in enumerate(enrol_names) if n == lab]].mean(0) for lab in self.labels]
            self.centroids[name] = torch.nn.functional.normalize(torch.stack(rows), dim=1)

    def _embed(self, name, images):
        import torch

        from photoveil.facemodels.embed import embed
        from photoveil.imageops import resize_to

        net = self.nets[name]
        return torch.nn.functional.normalize(embed(net, resize_to(images, tuple(net.spec.input_size))), dim=1)

    def top1(self, images) -> dict[str, list[str]]:
        return {name: [self.labels[i] for i in (self._embed(name, images) @ self.centroids[name].T).argmax(1).tolist()]
                for name in self.nets}


def run_demo(methods: list[str], model: str = DEFAULT_MODEL, unauthorized: list[str] | None = None,
             workdir: str | os.PathLike | None = None, rebuild: bool = False, threads: int | None = None,
             cache_dir=None, log=print) -> list[dict]:
    """Run the demo; one record per (method, upload mode), the clean baseline first."""
    import torch
    from pytorch_msssim import ssim

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
    published = build_artifacts(artifacts, model, methods, rebuild, cache_dir, log)
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
            names, enrol, enrol_names, query = _faces(model, cache_dir)
            rpc = RecognitionClient(target, token=token)
            for image, name in zip(enrol, enrol_names):
                rpc.enroll(model, name, wire.encode_image(image, "PNG"))
            log(f"phone: {len(names)} held-out photos; unauthorized services: {', '.join(unauthorized) or 'none'}")
            spies = Eavesdroppers(unauthorized, enrol, enrol_names, cache_dir) if unauthorized else None
            phone = Phone(rpc, public, tmp / "phone", threads=threads)
            shallow = phone.install("shallow")
            rows = []

            def evaluate(method: str, protected: torch.Tensor, ms: list[float], source) -> None:
                """``source``: the installed program computing the upload features (its split)."""
                s = [float(ssim(p[None], q[None], data_range=1.0)) for p, q in zip(protected, query)]
                seen = spies.top1(protected) if spies else {}
                for upload in ("image", "features"):
                    row = Row(method, upload, n=len(names), ssim=s, device_ms=ms)
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
                    for spy, labels in seen.items():
                        row.unauthorized_correct[spy] = sum(a == b for a, b in zip(labels, names))
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
                # a pmt-step program computes its own upload features; other methods use the shallow program
                evaluate(method, protected, ms, installed if hasattr(installed.runner, "features_of") else shallow)
            rpc.close()
        finally:
            server.stop(5.0)
            os.environ.pop(TOKEN_ENV, None)
    log("provider: server stopped")
    return [r.record() for r in rows]


def table(records: list[dict]) -> str:
    spies = sorted({k for r in records for k in r["unauthorized_correct"]})
    head = ["method", "upload", "authorized right", *[f"{s} right" for s in spies], "SSIM", "on-device ms",
            "bytes sent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        n = r["n"]
        unauth = [f"{r['unauthorized_correct'][s]}/{n}" if r["upload"] == "image" else "sees features only"
                  for s in spies]
        lines.append("| " + " | ".join([
            r["method"], r["upload"], f"{r['authorized_correct']}/{n}", *unauth,
            f"{r['ssim']:.3f}" if r["ssim"] is not None else "-",
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
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = run_demo(methods, args.model, unauthorized, args.workdir, args.rebuild, args.threads, args.cache_dir,
                       log=log)
    md = table(records)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(md)
        print(f"\n{len(records[0]['answers'])} held-out identities; authorized = {args.model}; "
              f"unauthorized = {', '.join(unauthorized)}; {time.perf_counter() - t0:.0f} s in all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo.json").write_text(json.dumps(records, indent=2) + "\n")
        (out / "demo.md").write_text(md + "\n")
    return 0
