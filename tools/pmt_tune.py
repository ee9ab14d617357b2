"""Tuning draw for the PMT presets (issue 21): protect 4 random LFW identities (``random.seed(SEED)``,
``*_0001.jpg``, centre crop 150) with each setting and print the split-point feature gap to the original,
the full-embedding cosine and SSIM.

    python tools/pmt_tune.py 5 "steps=100" "steps=25,step_size=3.5,optimizer=\"momentum\",momentum=0.5,schedule=\"linear\",match=\"clean\""
"""
import sys, time, glob, random, torch
from photoveil.client.protect.pmt import PMTConfig, PMTProtector
from photoveil.facemodels import registry
from photoveil.facemodels.align import align_faces
from photoveil.evaluation import metrics as M
torch.set_num_threads(1)
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
paths = random.sample(sorted(glob.glob("/work/shared/data/lfw/images/*/*_0001.jpg")), 4)
x = align_faces(paths, 150, alignment="center", model="faceapi-resnet34")
net = registry.load("faceapi-resnet34")
def run(name, preset="mid", **kw):
    p = PMTProtector.from_preset(preset, net, seed=0, **kw)
    t = time.perf_counter(); out = p.protect(x); dt = time.perf_counter() - t
    ssim = M.ssim(out, x).mean().item()
    with torch.no_grad():
        za, zb = p.models[0](out)[-1], p.models[0](x)[-1]
        j = ((za - zb).pow(2).flatten(1).mean(1) / zb.pow(2).flatten(1).mean(1)).mean().item()
        cos = M.cosine(net(out), net(x)).mean().item()
    print(f"{name:60s} steps {p.last_run['steps']:4d} Jclean {j:.4f} cos {cos:.4f} ssim {ssim:.4f} {dt:.1f}s", flush=True)
configs = [l for l in sys.argv[2:]] 
for c in configs:
    kw = eval(f"dict({c})")
    run(c, **kw)
