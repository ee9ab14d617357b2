"""Whole FMD protection of one 150x150 face on the exported .pte, 1 thread: export (once),
warm-up, then p50 wall and process-CPU time of repeated ``PteFMD.protect`` calls.

    PYTHONPATH=. python tools/fmd_time.py new16 /tmp/fmd-new16 7      # the default
    PYTHONPATH=. python tools/fmd_time.py paper16 /tmp/fmd-paper16 3  # fmd.PAPER at block2
"""
import sys, time, json, statistics, os
import torch
torch.set_num_threads(1)
from photoveil.client.protect.factory import fmd_classifier
from photoveil.client.protect.fmd import FMDConfig, PAPER
from photoveil.client.runtime import PteFMD
from photoveil.export import programs as P
from photoveil.export.lowering import export_program

which = sys.argv[1]; out = sys.argv[2]; reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
cfgs = {"new16": dict(kernel="gaussian", kernel_length=2),
        "paper16": dict(PAPER, split="block2")}
kw = json.loads(sys.argv[4]) if len(sys.argv) > 4 else cfgs[which]
cfg = FMDConfig(seed=0, **kw)
if not os.path.exists(os.path.join(out, "manifest.json")):
    clf, mid, split = fmd_classifier("faceapi-resnet34", cfg.split)
    t = time.time()
    prog = P.fmd_step_program(clf, cfg, size=150, model_id=mid, split=split)
    export_program(prog.module, prog.inputs, prog.options, out)
    print("export s", round(time.time() - t, 1), file=sys.stderr)
x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
prot = PteFMD(out, seed=0)
prot.protect(x)
ts, cs = [], []
for _ in range(reps):
    t = time.perf_counter(); c = time.process_time(); prot.protect(x)
    ts.append((time.perf_counter() - t) * 1000); cs.append((time.process_time() - c) * 1000)
steps_prog = prot.step
t = time.process_time(); prot.prepare(x); prep_cpu = (time.process_time() - t) * 1000
print(json.dumps({"which": which, "steps": prot.config.steps, "ms_p50": round(statistics.median(ts), 1),
                  "ms_all": [round(v, 1) for v in ts], "cpu_ms_p50": round(statistics.median(cs), 1),
                  "cpu_ms_all": [round(v, 1) for v in cs], "prepare_cpu_ms": round(prep_cpu, 1), "load": os.getloadavg()}))
