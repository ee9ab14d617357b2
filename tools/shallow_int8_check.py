"""What int8 shallow features do to the authorized model: LFW verification through fp32 vs int8.

The features upload sends ``E_c(x)`` from the ``shallow`` program and the provider runs the
rest of its model on it. This lowers the shallow program twice (fp32, and PT2E int8 with the
bench's calibration batches), runs LFW pairs through ``rest(shallow_pte(x))`` for each, and
prints the 10-fold verification accuracy of both beside eager (issue 21: int8 is allowed
where it moves the protection's utility by <= 2 points).

    python tools/shallow_int8_check.py [--pairs 600] [--seed 0] [--model faceapi-resnet34] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch import nn


class ProgramNet(nn.Module):
    """``x -> rest(shallow_program(x))`` with the recognizer's ``spec`` (batch-1 program)."""

    def __init__(self, net, program, rest):
        super().__init__()
        self.spec, self.program, self.rest = net.spec, program, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([self.program(x[i:i + 1])[0] for i in range(len(x))])
        return self.rest(feats.contiguous())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="faceapi-resnet34")
    ap.add_argument("--pairs", type=int, default=600, help="seeded subset of LFW pairs (default 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.pairs < 20:
        ap.error("--pairs must be >= 20 (10-fold cross-validation)")

    from photoveil.client.runtime import PteProgram, set_threads
    from photoveil.data.faces import parse_pairs, subset_pairs
    from photoveil.evaluation.lfw import evaluate_model
    from photoveil.export import programs as P
    from photoveil.export.calibration import quantize_int8
    from photoveil.export.lowering import export_program
    from photoveil.facemodels import registry
    from photoveil.paths import default_lfw_dir

    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    data = default_lfw_dir()
    pairs = subset_pairs(parse_pairs(Path(data) / "pairs.txt", data_root=data), args.pairs, seed=args.seed)
    net = registry.load(args.model).eval()
    split = net.spec.split_point(None)
    _, rest = net.split(split)
    results = {"model": args.model, "split": split, "pairs": len(pairs), "seed": args.seed,
               "eager": evaluate_model(args.model, pairs, net=net)}
    with tempfile.TemporaryDirectory() as tmp:
        for quant in ("fp32", "int8"):
            prog = P.shallow_program(net, split)
            if quant == "int8":
                quantize_int8(prog)
            export_program(prog.module, prog.inputs, prog.options, Path(tmp) / quant)
            wrapped = ProgramNet(net, PteProgram(Path(tmp) / quant), rest).eval()
            results[quant] = evaluate_model(args.model, pairs, net=wrapped)
    results["int8_minus_fp32_points"] = round(100 * (results["int8"]["accuracy"] - results["fp32"]["accuracy"]), 2)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print("| shallow | LFW accuracy (10-fold) | AUC |\n|---|---|---|")
    for k in ("eager", "fp32", "int8"):
        print(f"| {k} | {results[k]['accuracy']:.4f} +/- {results[k]['std']:.4f} | {results[k]['auc']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
