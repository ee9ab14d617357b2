"""Peer runtimes the bench measures the .pte programs against, in the same process:

* ONNX Runtime (``onnxruntime`` from PyPI) for the forward programs (generator, shallow):
  the module exported with the current torch ONNX exporter (``torch.onnx.export(...,
  dynamo=True)``), one CPU session with ``intra_op_num_threads`` = the bench's threads;
* ``torch.compile`` (Inductor, host C++ codegen) of the same traced step graph the
  step program is lowered from.

Each builder returns a callable ``run(*inputs) -> outputs`` (torch tensors in, first
output as a torch tensor out) or raises :class:`PeerUnavailable` with the reason, which
the bench records instead of a timing.

Example::

    >>> run = ort_runner(prog.module, prog.inputs, threads=1)
    >>> torch.testing.assert_close(run(*prog.inputs), prog.eager(*prog.inputs), atol=1e-4, rtol=1e-4)
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch


class PeerUnavailable(RuntimeError):
    """A peer runtime is not installed or could not take the program."""


def ort_runner(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], threads: int = 1) -> Callable:
    """``module`` in ONNX Runtime (CPU execution provider, all graph optimisations)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - optional peer
        raise PeerUnavailable(f"onnxruntime is not installed ({exc}); pip install onnxruntime onnxscript") from None
    try:
        with torch.no_grad():
            onnx_prog = torch.onnx.export(module.eval(), tuple(inputs), dynamo=True, verbose=False)
        onnx_prog.optimize()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            onnx_prog.save(path)
            data = path.read_bytes()
    except Exception as exc:  # the exporter's many failure types
        raise PeerUnavailable(f"torch ONNX export failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds_np = None

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        nonlocal feeds_np
        feeds_np = {n: t.detach().contiguous().numpy() for n, t in zip(names, tensors)}
        return torch.from_numpy(sess.run(None, feeds_np)[0])

    run.onnx_bytes = len(data)
    return run


def compile_runner(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable:
    """``torch.compile(module)`` (Inductor), compiled and warmed on ``inputs``."""
    try:
        compiled = torch.compile(module, dynamic=False, fullgraph=False)
        with torch.no_grad():
            compiled(*inputs)
    except Exception as exc:
        raise PeerUnavailable(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}") from None

    def run(*tensors: torch.Tensor):
        with torch.no_grad():
            out = compiled(*tensors)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run


__all__ = ["PeerUnavailable", "compile_runner", "ort_runner"]
