"""FMD rows on one seeded identity draw, the evaluation context built once (what
``photoveil evaluate --method fmd --attacks abuse`` measures per setting: top-1, strict (cal),
self-cosine of every recognizer and SSIM; no UP), one JSON line per variant.

    PYTHONPATH=. python tools/fmd_rows.py --seed 0 --variants rows.json --out rows.jsonl
    # rows.json: [{"name": "paper", "steps": 100, ...FMDConfig fields...}, ...]
    # --queue DIR instead: poll DIR for *.json lists (a worker that keeps its context)
"""
import json, sys, time, argparse
import torch
torch.set_num_threads(1)
from photoveil.evaluation.config import EvalConfig
from photoveil.evaluation.runner import Evaluation
from photoveil.evaluation.data import select_data
from photoveil.evaluation.context import build_context
from photoveil.evaluation.attacks import abuse, image

ap = argparse.ArgumentParser()
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--identities", type=int, default=20)
ap.add_argument("--variants", default=None, help="json list of override dicts (with optional 'name')")
ap.add_argument("--queue", default=None, help="folder polled for *.json variant lists")
ap.add_argument("--out", required=True)
a = ap.parse_args()
cfg = EvalConfig(method="fmd", attacks=("abuse",), seed=a.seed, identities=a.identities, progress=False, preset=None)
ev = Evaluation(cfg)
data = select_data(cfg)
t0 = time.time()
base = build_context(cfg, ev.models, ev.faces, data, ev.timings, None)
print("context", round(time.time() - t0, 1), "s", data.summary(), file=sys.stderr, flush=True)
setting = cfg.authorized if isinstance(cfg.authorized, tuple) else tuple(cfg.authorized)
setting = tuple(setting[:1])
import glob, os
def batches():
    if a.variants:
        yield json.loads(open(a.variants).read())
        return
    while True:
        files = sorted(glob.glob(os.path.join(a.queue, "*.json")))
        if not files:
            time.sleep(5); continue
        f = files[0]; vs = json.loads(open(f).read()); os.rename(f, f + ".done")
        if vs == "stop": return
        yield vs
rows = []
for v in (v for b in batches() for v in b):
    name = v.pop("name", json.dumps(v))
    t0 = time.time()
    prot = ev.protect(base, setting, extra=v)
    dt = time.time() - t0
    ctx = base.with_protection(prot)
    recs = abuse.measure(ctx, prot.uploads, "none", prot.params) + image.measure(ctx, prot.images, prot.params, attack="sweep")
    row = {"name": name, "s": round(dt, 1), "n_img": len(prot.images)}
    for r in recs:
        if r["metric"] in ("top1", "strict_accuracy_cal", "clean_top1", "clean_strict_accuracy_cal", "ssim", "self_cosine"):
            row[f'{r["evaluated_model"]}:{r["metric"]}'] = r["value"]
    rows.append(row)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    au = setting[0]
    un = [k.split(":")[0] for k in row if k.endswith(":top1") and not k.startswith(au) and not k.startswith("mean")]
    print(f"{name:50s} {dt:6.1f}s auth top1 {row.get(au+':top1')} strict {row.get(au+':strict_accuracy_cal')}"
          f"(clean {row.get(au+':clean_strict_accuracy_cal')}) cos {row.get(au+':self_cosine')} | "
          + " ".join(f"{u[:8]} {row.get(u+':top1')}" for u in un)
          + f" mean {row.get('mean-unauthorized:top1')} ssim {row.get(au+':ssim')}", file=sys.stderr, flush=True)
