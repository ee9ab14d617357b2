"""Usage: python tools/pmt_cpu_time.py RUNS ARTIFACT... (pmt-step artifact folders)."""
"""CPU (thread) time vs wall time of whole PMT protections on exported pmt-step artifacts."""
import sys, time, json, torch
torch.set_num_threads(1)
from photoveil.client.runtime import PtePMT, set_threads
from photoveil.export.bench import _face, _pct
set_threads(1)
runs = int(sys.argv[1])
for folder in sys.argv[2:]:
    pte = PtePMT(folder, seed=0)
    size = pte._program_shape()[-1]
    face = _face(size)
    pte.protect(face)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        pte.protect(face)
        wall.append((time.perf_counter() - t0) * 1e3); cpu.append((time.thread_time() - c0) * 1e3)
    print(json.dumps({"artifact": folder, "steps": pte.last_run["steps"], "calls": pte.last_run["calls"], "runs": runs,
                      "wall_ms_p50": round(_pct(wall, 50), 1), "cpu_ms_p50": round(_pct(cpu, 50), 1),
                      "cpu_ms_p90": round(_pct(cpu, 90), 1), "cpu_ms_p99": round(_pct(cpu, 99), 1)}), flush=True)
