"""Distributed training is a flag: the generator trains under DDP with two gloo processes on the
CPU (the command line a GPU user runs with --accelerator gpu), both ranks train, rank 0's
checkpoints load with weights_only=True. 96 images, 2 ranks x 3 batches of 16: one epoch, 3 steps
(~45 s here, mostly starting two processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow  # 42 s on a quiet 2-core machine, 97 s on a busy one: over the default suite's budget
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_generator_trains_under_ddp_on_two_cpu_processes(tmp_path):
    from photoveil.nets.unet import load_generator

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "photoveil.cli", "generator", "train", "--target", "vgg13_bn", "--aux", "none",
           "--width", "0.125", "--epochs", "1", "--subset", "96", "--val-size", "32", "--batch-size", "16",
           "--precision", "32", "--max-steps", "3", "--no-test", "--no-progress", "--json",
           "--strategy", "ddp", "--devices", "2", "--accelerator", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr and "Starting with 2 processes" in proc.stderr
    ranks = sorted(json.loads(p.read_text())["rank"] for p in (out / "ranks").glob("rank-*.json"))
    assert ranks == [0, 1]
    for p in (out / "ranks").glob("rank-*.json"):
        report = json.loads(p.read_text())
        assert report["world_size"] == 2 and report["strategy"] == "DDPStrategy" and report["train_batches"] == 3
    metrics = json.loads(proc.stdout)  # printed once, by rank 0
    assert metrics["target"] == "vgg13_bn" and metrics["best_val_loss"] > 0  # validation ran after the 3 steps
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and any(k.startswith("generator.") for k in ckpt["state_dict"])
    net, _ = load_generator(out / "generator.pt")
    x = torch.rand(2, 1, 32, 32)
    assert net(x).shape == x.shape
