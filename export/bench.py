"""``photoveil bench``: eager PyTorch vs .pte (ExecuTorch + XNNPACK) latency, measured in
the same process and interleaved (eager run, program run, eager run, ...) so that load
from other processes hits both alike.

One record per (program, size, threads), batch 1::

    {"program": "pmt-step", "size": 112, "threads": 1, "runs": 50,
     "eager_ms_p50": ..., "eager_ms_p90": ..., "eager_ms_p99": ...,
     "pte_ms_p50": ..., "pte_ms_p90": ..., "pte_ms_p99": ..., "ratio_p50": pte/eager,
     "pte_bytes": ..., "rss_load_mb": RSS growth when loading the program,
     "peak_rss_mb": the process's peak RSS so far, "quantization": "fp32", "model_id": ...}

Beside eager, the same run measures the peers and the limit (issue 21):

* forward programs (``generator``, ``shallow``) also in ONNX Runtime (``ort_ms_p50/p90/p99``,
  ``ratio_pte_ort`` = pte / ort), exported with the current torch ONNX exporter (an int8
  program races ORT's fp32 run of the same module: ``peer_quantization`` ``fp32``);
* the ``pmt-step`` program against ``torch.compile`` of the same traced step on the host
  (``compile_ms_p50``..., ``ratio_pte_compile``);
* per program ``gflops_per_call`` (counted from the exported graph, :mod:`.flops`),
  ``achieved_gflops`` (at the .pte p50) and ``peak_gflops`` (GEMM micro-benchmarks at the
  same thread count, measured in the same process: the better of ``peak_gflops_torch`` and
  ``peak_gflops_xnnpack``).

Whole-protection records: one complete protection of one face (all steps, host loop +
program calls), one record per (method, preset, size, threads)::

    {"program": "protect-pmt", "preset": "mid", "size": 150, "threads": 1, "steps": 25,
     "calls": ..., "runs": 20, "eager_ms_p50": ..., "pte_ms_p50": ..., "pte_ms_p90": ...,
     "pte_ms_p99": ..., "ratio_p50": ..., ...}

``protect-pmt`` for each of ``--protect-presets`` (``legacy-mid`` / ``legacy-high``: the
settings before issue 21, the ablation rows), ``protect-fmd`` (the FMD protector as it is,
its default preset, on its ``fmd-step`` program) and ``protect-generator`` (one generator
forward).

``--json`` prints the records as JSON lines; ``--out DIR`` also writes ``bench.json``,
``bench.md`` and the artifacts (so their sizes can be inspected).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from photoveil.artifact import KINDS
from photoveil.client.protect.flags import add_method_flags, add_preset_flag, method_overrides

PROGRAMS = tuple(KINDS)
PROTECT = ("protect-pmt", "protect-fmd", "protect-generator")
PEERS = ("ort", "compile")
ALIASES = {"pmt-protect": "protect-pmt"}  # the record name before issue 21


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="eager vs .pte latency of the protection programs (p50/p90/p99)")
    p.add_argument("--programs", default="generator,shallow,pmt-step,protect-pmt,protect-generator,protect-fmd",
                   help=f"comma list of {', '.join(PROGRAMS + PROTECT)} (default: all but fmd-step, whose "
                        "lowering takes minutes; protect-fmd lowers it once at --protect-size)")
    p.add_argument("--sizes", default="32,112,native", help="comma list of sizes; 'native' = the recognizer's own")
    p.add_argument("--threads", default=None, help="comma list (default: 1 and all cores)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per record (>= 50 for the issue's figures)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--model", default="faceapi-resnet34", help="authorized recognizer")
    p.add_argument("--generator", help="generator checkpoint (default: untrained paper-size U-Net)")
    p.add_argument("--int8", action="store_true", help="also bench int8 generator / shallow programs")
    p.add_argument("--protect-size", type=int, default=150, help="face size of the whole-protection records")
    p.add_argument("--protect-presets", default="mid,high,legacy-mid",
                   help="PMT presets of the protect-pmt records: low, mid, high, legacy-low, legacy-mid, legacy-high "
                        "(legacy: the settings before issue 21), high-full-band (high without highpass)")
    p.add_argument("--protect-runs", type=int, default=20, help="timed whole protections per record")
    p.add_argument("--peers", default="ort,compile",
                   help="peer runtimes in the same run: ort (forward programs), compile (pmt-step), none")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--out", help="folder for bench.json, bench.md and the artifacts")
    p.add_argument("--cache-dir")
    add_preset_flag(p)
    add_method_flags(p, ("pmt",))  # the pmt-step and pmt-protect records
    p.set_defaults(func=main)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def interleaved(fns: dict, runs: int, warmup: int, block: int = 1, cpu: dict | None = None) -> dict[str, list[float]]:
    """Milliseconds of each callable, alternating between them every ``block`` runs.

    ``block=1`` alternates run by run (1 thread). With several threads use blocks: eager
    PyTorch's OpenMP workers spin-wait after each op and, on a small machine, starve the
    ExecuTorch pool's threads that run right after them (and vice versa).

    ``cpu``, when given, receives each callable's CPU milliseconds of the calling thread per
    run (``time.thread_time``): on a machine shared with other jobs, a one-thread run's CPU
    time is what it would take alone, its wall time is not.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    done = 0
    while done < runs:
        n = min(block, runs - done)
        for k, fn in fns.items():
            fn()  # re-warm after the other side ran
            for _ in range(n):
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
                if cpu is not None:
                    cpu.setdefault(k, []).append((time.thread_time() - c0) * 1e3)
        done += n
    return times


def _stats(prefix: str, ms: list[float]) -> dict:
    return {f"{prefix}_ms_p50": round(_pct(ms, 50), 3), f"{prefix}_ms_p90": round(_pct(ms, 90), 3),
            f"{prefix}_ms_p99": round(_pct(ms, 99), 3)}


def _set_threads(n: int) -> None:
    """Threads of eager PyTorch and of the ExecuTorch pool. Once per process, before any
    program is loaded: resizing the pool under loaded XNNPACK programs deadlocks
    (executorch 1.5.1), so each thread count runs in its own process."""
    import torch

    from photoveil.client.runtime import set_threads

    torch.set_num_threads(n)
    set_threads(n)


def _peak(threads: int, cache: dict = {}) -> dict:
    """GEMM peak at this process's thread count (``peak_gflops`` and per library),
    measured once per process."""
    if threads not in cache:
        from photoveil.export.flops import gemm_peak_gflops

        cache[threads] = gemm_peak_gflops()
    return cache[threads]


def _flops_fields(flops: int | None, pte_ms: float, threads: int) -> dict:
    if not flops:
        return {}
    gf = flops / 1e9
    return {"gflops_per_call": round(gf, 4), "achieved_gflops": round(gf / (pte_ms / 1e3), 2), **_peak(threads)}


def _peer_runners(name: str, prog, threads: int, peers: tuple[str, ...]) -> tuple[dict, dict]:
    """``({label: callable}, {field: note})`` of the peers that apply to program ``name``."""
    from photoveil.export.peers import PeerUnavailable, compile_runner, ort_runner

    runners, notes = {}, {}
    try:
        if "ort" in peers and name in ("generator", "shallow"):
            runners["ort"] = ort_runner(prog.module, prog.inputs, threads)
        if "compile" in peers and name == "pmt-step":
            runners["compile"] = compile_runner(prog.module, prog.inputs)
    except PeerUnavailable as exc:
        notes["peer_error"] = str(exc)
    return runners, notes


def bench_program(name: str, prog, threads: list[int], runs: int, warmup: int, out_dir: Path, size_label,
                  peers: tuple[str, ...] = ()) -> list[dict]:
    """Records of one lowered program at each thread count (with its peers and FLOPs)."""
    import torch

    from photoveil.client.runtime import PteProgram
    from photoveil.export.flops import graph_flops
    from photoveil.export.lowering import export_program
    from photoveil.imageops import in_layout

    folder = out_dir / f"{name}-{size_label}-{prog.options.quantize}"
    art = export_program(prog.module, prog.inputs, prog.options, folder)
    flops = graph_flops(art.lowered.exported)["flops"] if art.lowered.exported is not None else None
    rss0 = _rss_mb()
    pte = PteProgram(folder)
    inputs = prog.inputs
    # each runtime gets the layout it was made for (an NHWC program channels-last bytes), so no
    # timed call pays for a conversion the phone does not make
    pte_inputs = in_layout(inputs, prog.options.layout)
    pte(*pte_inputs)  # load the method (packs the XNNPACK weights)
    rss_load = _rss_mb() - rss0
    records = []
    for t in threads:
        fns = {"eager": lambda: prog.eager(*inputs), "pte": lambda: pte(*pte_inputs)}
        # an int8 program races the peers' fp32 run of the same module (what it would replace)
        runners, notes = _peer_runners(name, prog, t, peers)
        if runners and prog.options.quantize != "fp32":
            notes["peer_quantization"] = "fp32"
        agree = {}
        for label, run in runners.items():
            fns[label] = (lambda r=run: r(*inputs))
            with torch.no_grad():
                ref = prog.eager(*inputs)
                ref = ref[0] if isinstance(ref, (tuple, list)) else ref
                agree[f"{label}_max_abs_err"] = float((run(*inputs) - ref).abs().max())
        cpu: dict = {}
        with torch.no_grad():
            ms = interleaved(fns, runs, warmup, block=1 if t == 1 else 10, cpu=cpu)
        rec = {"program": name, "size": size_label, "threads": t, "batch": int(inputs[0].shape[0]), "runs": runs,
               **_stats("eager", ms["eager"]), **_stats("pte", ms["pte"]),
               "ratio_p50": round(_pct(ms["pte"], 50) / _pct(ms["eager"], 50), 3),
               "pte_bytes": art.manifest.pte_bytes, "rss_load_mb": round(rss_load, 1),
               "peak_rss_mb": round(_peak_rss_mb(), 1), "quantization": prog.options.quantize,
               "layout": prog.options.layout, "model_id": prog.options.model_id, "delegates": art.manifest.delegates,
               "non_delegated_ops": sum(art.manifest.non_delegated_ops.values()), **notes, **agree}
        for label in runners:
            rec.update(_stats(label, ms[label]))
            rec[f"ratio_pte_{label}"] = round(_pct(ms["pte"], 50) / _pct(ms[label], 50), 3)
        rec.update(_flops_fields(flops, _pct(ms["pte"], 50), t))
        rec.update(_cpu_fields(cpu, t))
        if flops and t == 1:  # the same, at the CPU time (what one core alone achieves)
            rec["achieved_gflops_cpu"] = round(flops / 1e9 / (_pct(cpu["pte"], 50) / 1e3), 2)
        records.append(rec)
    return records


def pmt_config(args):
    """The PMT config of the pmt records: ``--preset`` and the pmt flags (validated)."""
    from photoveil.client.protect.factory import build_config

    return build_config("pmt", args.preset, {"seed": 0, **method_overrides(args, "pmt", ("pmt",))})


def pmt_preset_config(preset: str, overrides: dict | None = None):
    """The PMT config of a ``--protect-presets`` name (a preset or an ablation preset:
    ``legacy-*``, the pre-issue-21 settings; ``high-full-band``, high without ``highpass``)."""
    from photoveil.client.protect.pmt import PMTBase, PMTConfig

    values = {**PMTBase.PRESETS, **PMTBase.ABLATION_PRESETS}[preset]
    return PMTConfig(**{**values, "seed": 0, **(overrides or {})})


def _protect_record(program: str, preset: str, size: int, t: int, steps: int, runs: int, ms: dict, **extra) -> dict:
    rec = {"program": program, "preset": preset, "size": size, "threads": t, "batch": 1, "steps": steps,
           "runs": runs, **_stats("eager", ms["eager"]), **_stats("pte", ms["pte"]),
           "ratio_p50": round(_pct(ms["pte"], 50) / _pct(ms["eager"], 50), 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
           "quantization": "fp32", **extra}
    return rec


def _cpu_fields(cpu: dict, threads: int) -> dict:
    """``<label>_cpu_ms_p50`` of one-thread records (CPU time; see :func:`interleaved`)."""
    if threads != 1:
        return {}
    return {f"{k}_cpu_ms_p50": round(_pct(v, 50), 3) for k, v in cpu.items()}


def _face(size: int):
    """A real face (the shipped LFW photo of the golden vectors) at ``size``, else noise."""
    import torch

    try:
        from photoveil.export.golden import _golden_image

        return _golden_image(3, size, size)[0]
    except Exception:
        return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))


def bench_protect(model: str, size: int, threads: list[int], out_dir: Path, cfg, cache_dir=None,
                  repeats: int = 3, preset: str = "mid", compare_one_step: bool = False) -> list[dict]:
    """Full PMT protection (``cfg``) of one ``size`` face: eager vs .pte."""
    from photoveil.client.runtime import PtePMT
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program

    prog = P.pmt_step_program(model, cfg, size, cache_dir=cache_dir)
    folder = out_dir / f"protect-pmt-{preset}-{size}"
    art = export_program(prog.module, prog.inputs, prog.options, folder)
    eager = prog.meta["protector"]
    pte = PtePMT(folder, seed=0)
    one_per_call = None
    if compare_one_step and cfg.steps_per_call > 1:
        import dataclasses

        cfg1 = dataclasses.replace(cfg, steps_per_call=1)
        prog1 = P.pmt_step_program(model, cfg1, size, cache_dir=cache_dir)
        export_program(prog1.module, prog1.inputs, prog1.options, out_dir / f"protect-pmt-{preset}-{size}-k1")
        one_per_call = PtePMT(out_dir / f"protect-pmt-{preset}-{size}-k1", seed=0)
    face = _face(size)
    records = []
    for t in threads:
        cpu: dict = {}
        ms = interleaved({"eager": lambda: eager.protect(face), "pte": lambda: pte.protect(face)}, repeats, 1, cpu=cpu)
        a, b = eager.protect(face), pte.protect(face)
        run = pte.last_run
        extra = {}
        if one_per_call is not None:  # the same protection at one step per call: does the multi-step program pay?
            ms1 = interleaved({"pte": lambda: one_per_call.protect(face), "k": lambda: pte.protect(face)}, repeats, 1)
            extra = {"pte_ms_p50_one_step_per_call": round(_pct(ms1["pte"], 50), 3),
                     "pte_ms_p50_same_run": round(_pct(ms1["k"], 50), 3)}
        records.append(_protect_record(
            "protect-pmt", preset, size, t, run["steps"], repeats, ms, calls=run["calls"],
            configured_steps=cfg.steps, optimizer=cfg.optimizer, schedule=cfg.schedule, match=cfg.match,
            steps_per_call=cfg.steps_per_call, step_size=cfg.step_size, pte_bytes=art.manifest.pte_bytes,
            model_id=prog.options.model_id, feature_loss=round(sum(run["loss"]) / len(run["loss"]), 4),
            pixels_equal_to_eager=round((a == b).float().mean().item(), 4),
            max_abs_diff_to_eager=round((a - b).abs().max().item(), 4),
            eager_feature_loss=round(sum(eager.last_run["loss"]) / len(eager.last_run["loss"]), 4),
            **_cpu_fields(cpu, t), **extra))
    return records


def bench_protect_fmd(model: str, size: int, threads: list[int], out_dir: Path, repeats: int,
                      cache_dir=None) -> list[dict]:
    """Full FMD protection (its default preset, the protector as it is) of one face."""
    from photoveil.client.protect.factory import build_config, fmd_classifier
    from photoveil.client.runtime import PteFMD
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program

    cfg = build_config("fmd", "mid", {"seed": 0})
    clf, model_id, split = fmd_classifier(model, cfg.split, cache_dir=cache_dir)
    prog = P.fmd_step_program(clf, cfg, size, model_id=model_id, split=split)
    folder = out_dir / f"protect-fmd-{size}"
    art = export_program(prog.module, prog.inputs, prog.options, folder)
    eager = prog.meta["protector"]
    pte = PteFMD(folder, seed=0)
    face = _face(size)
    records = []
    for t in threads:
        ms = interleaved({"eager": lambda: eager.protect(face), "pte": lambda: pte.protect(face)}, repeats, 1)
        records.append(_protect_record("protect-fmd", "mid", size, t, cfg.steps, repeats, ms, eps=cfg.eps,
                                       pte_bytes=art.manifest.pte_bytes, model_id=model_id))
    return records


def bench_protect_generator(gen, model_id: str, size: int, threads: list[int], out_dir: Path,
                            repeats: int) -> list[dict]:
    """One whole generator protection (validation + one forward) of one face."""
    from photoveil.client.protect.configs import GeneratorConfig
    from photoveil.client.protect.generator import GeneratorProtector
    from photoveil.client.runtime import PteGenerator
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program

    prog = P.generator_program(gen, size, model_id=model_id)
    folder = out_dir / f"protect-generator-{size}"
    art = export_program(prog.module, prog.inputs, prog.options, folder)
    pte = PteGenerator(folder)
    import torch

    eager = GeneratorProtector(GeneratorConfig(checkpoint=model_id or "untrained"), generator=gen)
    face = _face(size)
    records = []

    for t in threads:
        with torch.no_grad():
            ms = interleaved({"eager": lambda: eager.protect(face), "pte": lambda: pte.protect(face)}, repeats, 2)
        records.append(_protect_record("protect-generator", "mid", size, t, 1, repeats, ms,
                                       pte_bytes=art.manifest.pte_bytes, model_id=model_id))
    return records


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()))


def _generator(args):
    """``(U-Net, model id)`` of the generator records."""
    import torch

    from photoveil.nets.unet import UNetGenerator, load_generator

    if args.generator:
        from photoveil.client.protect.generator import GeneratorProtector

        gen, _ = load_generator(GeneratorProtector._resolve(args.generator))
        return gen.eval(), args.generator
    torch.manual_seed(0)
    return UNetGenerator(in_channels=3, width=1.0).eval(), "unet-w1-untrained"


def run_bench(args) -> list[dict]:
    from tqdm.auto import tqdm

    from photoveil.export import programs as P
    from photoveil.facemodels import registry

    names = _names(args.programs)
    threads = [int(args.threads)]
    _set_threads(threads[0])
    peers = tuple(p for p in _names(args.peers) if p != "none")
    native = registry.get_spec(args.model).input_size[0]
    sizes = [native if s.strip() == "native" else int(s) for s in args.sizes.split(",")]
    sizes = list(dict.fromkeys(sizes))
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="photoveil-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = []
    for name in names:
        if name in PROTECT:
            presets = _names(args.protect_presets) if name == "protect-pmt" else ["mid"]
            jobs += [(name, args.protect_size, p) for p in presets]
            continue
        for size in sizes:
            jobs.append((name, size, "fp32"))
            if args.int8 and name in ("generator", "shallow"):
                jobs.append((name, size, "int8"))
    records = _Records(out_dir / "bench.partial.jsonl")
    pmt_cfg = pmt_config(args)
    overrides = method_overrides(args, "pmt", ("pmt",))
    net = None
    for name, size, quant in tqdm(jobs, desc="bench", unit="program"):
        if name == "protect-pmt":
            records += bench_protect(args.model, size, threads, out_dir, pmt_preset_config(quant, overrides),
                                     args.cache_dir, repeats=args.protect_runs, preset=quant,
                                     compare_one_step=quant == "mid")
            continue
        if name == "protect-fmd":
            records += bench_protect_fmd(args.model, size, threads, out_dir, args.protect_runs, args.cache_dir)
            continue
        if name == "protect-generator":
            gen, model_id = _generator(args)
            records += bench_protect_generator(gen, model_id, size, threads, out_dir, args.protect_runs)
            continue
        if name == "generator":
            gen, model_id = _generator(args)
            prog = P.generator_program(gen, size, model_id=model_id)
        elif name == "shallow":
            net = net or registry.load(args.model, cache_dir=args.cache_dir)
            prog = P.shallow_program(net, size=size)
        elif name == "pmt-step":  # one step per call: the per-step record (protect-pmt has the calls)
            import dataclasses

            net = net or registry.load(args.model, cache_dir=args.cache_dir)
            prog = P.pmt_step_program(net, dataclasses.replace(pmt_cfg, steps_per_call=1), size=size,
                                      with_features=False)
        else:
            from photoveil.client.protect.factory import fmd_classifier

            clf, model_id, split = fmd_classifier(args.model, cache_dir=args.cache_dir)
            prog = P.fmd_step_program(clf, size=size, model_id=model_id, split=split)
        if quant == "int8":
            from photoveil.export.calibration import quantize_int8

            quantize_int8(prog)
        records += bench_program(name, prog, threads, args.runs, args.warmup, out_dir, size, peers)
    return list(records)


class _Records(list):
    """The run's records, each also appended to ``path`` as it is measured (a long run
    interrupted keeps what it measured)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        path.write_text("")

    def __iadd__(self, recs):
        with self.path.open("a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        self.extend(recs)
        return self


TABLE = ["program", "preset", "size", "threads", "steps", "quantization", "eager_ms_p50", "pte_ms_p50", "pte_ms_p99",
         "ratio_p50", "ort_ms_p50", "ratio_pte_ort", "compile_ms_p50", "ratio_pte_compile", "gflops_per_call",
         "achieved_gflops", "peak_gflops", "peak_gflops_torch", "peak_gflops_xnnpack"]


def table(records: list[dict]) -> str:
    cols = TABLE
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def _all_threads(args) -> list[dict]:
    """One child process per thread count (see :func:`_set_threads`)."""
    import subprocess
    import sys

    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, os.cpu_count() or 1})
    if len(counts) == 1:
        args.threads = str(counts[0])
        return run_bench(args)
    records = []
    for t in counts:
        argv = [sys.executable, "-m", "photoveil.cli", "bench", "--programs", args.programs, "--sizes", args.sizes,
                "--threads", str(t), "--runs", str(args.runs), "--warmup", str(args.warmup), "--model", args.model,
                "--protect-size", str(args.protect_size), "--protect-presets", args.protect_presets,
                "--protect-runs", str(args.protect_runs), "--peers", args.peers, "--json"]
        argv += ["--out", str(Path(args.out) / f"threads-{t}")] if args.out else []
        argv += ["--generator", args.generator] if args.generator else []
        argv += ["--int8"] if args.int8 else []
        argv += ["--cache-dir", args.cache_dir] if args.cache_dir else []
        argv += ["--preset", args.preset]
        for name, value in method_overrides(args, "pmt", ("pmt",)).items():
            flag = f"--{name.replace('_', '-')}"
            argv += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
        # passive OpenMP waiting: eager's idle workers must not spin on the cores the
        # ExecuTorch pool needs next (set before torch is imported, so in the child)
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True, env=env)
        records += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return records


def _check_list(text: str, flag: str, ok, accepted: str) -> None:
    from photoveil.errors import InvalidInput

    items = [t.strip() for t in text.split(",")]
    bad = [t for t in items if not ok(t)]
    if bad or not items:
        raise InvalidInput(f"{flag} {text!r}: {', '.join(bad) or 'empty'} not accepted; give a comma list of {accepted}")


def main(args) -> int:
    from photoveil.errors import InvalidInput

    if args.runs < 1:
        raise InvalidInput(f"--runs must be >= 1, got {args.runs}")
    if args.warmup < 0:
        raise InvalidInput(f"--warmup must be >= 0, got {args.warmup}")
    if args.protect_runs < 1:
        raise InvalidInput(f"--protect-runs must be >= 1, got {args.protect_runs}")
    if not 8 <= args.protect_size <= 1024:
        raise InvalidInput(f"--protect-size must be in 8..1024, got {args.protect_size}")
    known = (*PROGRAMS, *PROTECT, *ALIASES)
    _check_list(args.programs, "--programs", lambda s: s in known, ", ".join(PROGRAMS + PROTECT))
    from photoveil.client.protect.pmt import PMTBase

    presets = (*PMTBase.PRESETS, *PMTBase.ABLATION_PRESETS)
    _check_list(args.protect_presets, "--protect-presets", lambda s: s in presets, ", ".join(presets))
    _check_list(args.peers, "--peers", lambda s: s in (*PEERS, "none"), ", ".join((*PEERS, "none")))
    _check_list(args.sizes, "--sizes", lambda s: s == "native" or (s.isdigit() and 8 <= int(s) <= 1024),
                "sizes 8..1024 or native")
    if args.threads:
        _check_list(args.threads, "--threads", lambda s: s.isdigit() and int(s) >= 1, "thread counts >= 1")
    pmt_config(args)  # bad pmt settings fail before anything is exported
    records = _all_threads(args)
    if args.out:
        out = Path(args.out)
        (out / "bench.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        (out / "bench.md").write_text(table(records) + "\n")
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="eager vs .pte vs peers (ms, batch 1)")
        cols = TABLE
        for c in cols:
            t.add_column(c)
        for r in records:
            t.add_row(*[str(r.get(c, "")) for c in cols])
        Console().print(t)
    return 0
