"""``photoveil bench`` (export/bench.py) on small stand-in programs: the records carry the
peers (ONNX Runtime, torch.compile), FLOPs against the GEMM peak and the whole-protection
fields; FLOPs counted from the graph are exact on a known convolution."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from photoveil.client.protect.pmt import PMTConfig
from photoveil.export import bench
from photoveil.export import programs as P
from photoveil.export.flops import gemm_peak_gflops, graph_flops
from tests.toys import face_front as toy_shallow


def test_graph_flops_counts_a_convolution_exactly():
    conv = nn.Conv2d(3, 8, 3, padding=1).eval()
    ep = torch.export.export(conv, (torch.rand(1, 3, 10, 10),))
    want = 8 * 10 * 10 * (2 * 3 * 3 * 3) + 8 * 10 * 10  # MACs * 2 + the bias add
    assert graph_flops(ep)["flops"] == want
    lin = torch.export.export(nn.Linear(16, 4, bias=False).eval(), (torch.rand(2, 16),))
    assert graph_flops(lin)["flops"] == 2 * 2 * 4 * 16


def test_gemm_peak_is_the_best_of_both_libraries():
    peak = gemm_peak_gflops(sizes=(64,), seconds=0.02)
    assert 0 < peak["peak_gflops_torch"] < 1e5 and 0 < peak["peak_gflops_xnnpack"] < 1e5
    assert peak["peak_gflops"] == max(peak["peak_gflops_torch"], peak["peak_gflops_xnnpack"])


def test_forward_record_has_ort_peer_flops_and_peak(tmp_path):
    pytest.importorskip("onnxruntime")
    prog = P.UploadFeatures(toy_shallow()).eval()
    x = torch.rand(1, 3, 32, 32)
    from photoveil.export.lowering import LowerOptions

    program = P.Program(prog, (x,), LowerOptions(kind="shallow", model_id="toy"), prog)
    (rec,) = bench.bench_program("shallow", program, [1], runs=3, warmup=1, out_dir=tmp_path, size_label=32,
                                 peers=("ort",))
    for key in ("ort_ms_p50", "ort_ms_p99", "ratio_pte_ort", "pte_ms_p50", "gflops_per_call", "achieved_gflops",
                "peak_gflops"):
        assert key in rec, key
    assert rec["ort_max_abs_err"] < 1e-4  # ORT computes what eager does
    assert rec["gflops_per_call"] > 0 and rec["achieved_gflops"] > 0


def test_whole_protection_record_fields(tmp_path):
    cfg = PMTConfig(seed=0, steps=4, step_size=2.0, optimizer="momentum", match="clean", steps_per_call=2)
    (rec,) = bench.bench_protect([toy_shallow()], 32, [1], tmp_path, cfg, repeats=2, preset="mid")
    assert rec["program"] == "protect-pmt" and rec["preset"] == "mid" and rec["size"] == 32
    assert rec["threads"] == 1 and rec["steps"] == 4 and rec["calls"] == 2
    for key in ("pte_ms_p50", "pte_ms_p90", "pte_ms_p99", "eager_ms_p50"):
        assert rec[key] > 0
    assert rec["pixels_equal_to_eager"] > 0.99


def test_legacy_presets_are_the_settings_before_issue_21():
    old = bench.pmt_preset_config("legacy-mid")
    assert (old.steps, old.step_size, old.optimizer, old.match, old.steps_per_call) == (100, 0.5, "sign",
                                                                                         "augmented", 1)
    new = bench.pmt_preset_config("mid")
    assert new.steps * 4 <= old.steps and new.match == "clean"


def test_high_full_band_is_high_without_highpass():
    high, full = bench.pmt_preset_config("high"), bench.pmt_preset_config("high-full-band")
    assert high.highpass > 0 and full.highpass == 0
    assert {**vars(high), "highpass": 0} == vars(full)
