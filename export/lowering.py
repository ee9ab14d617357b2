"""Lower a PyTorch module to an ExecuTorch program (.pte) for the XNNPACK backend.

Pure functions of ``(module, example_inputs, options)``: :func:`lower` returns the
program bytes and what was delegated, :func:`export_program` also writes the artifact
folder the server publishes (``ArtifactService``): the ``.pte`` and its
:class:`~photoveil.artifact.Manifest` (format in :mod:`photoveil.artifact`).

``quantize="int8"`` runs PT2E static quantization with the ``XNNPACKQuantizer``
(symmetric per-channel int8 weights, int8 activations) calibrated on the given
calibration inputs before lowering; ``fp32`` lowers the float graph as it is.

Example::

    >>> opts = LowerOptions(kind="generator", model_id="face-unet", input_names=["image"])
    >>> art = export_program(net.eval(), (torch.rand(1, 3, 112, 112),), opts, "out/generator-112")
    >>> art.pte, art.manifest.sha256
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from photoveil.artifact import LAYOUTS, Manifest, sha256_file, write_manifest
from photoveil.errors import InvalidInput
from photoveil.imageops import in_layout

QUANTIZE = ("fp32", "int8")
XNNPACK_BACKEND = "XnnpackBackend"
# Images enter every program as RGB floats in [0, 1]; each model normalises inside.
DEFAULT_NORMALISATION = {"range": [0.0, 1.0], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                         "note": "RGB in [0, 1]; any model-specific normalisation is inside the program"}


@dataclass
class LowerOptions:
    """How to lower a module and what its manifest says.

    Attributes:
        kind: program kind, a key of :data:`photoveil.artifact.KINDS` (free text for others).
        model_id: id of the model the program was made from.
        program: file stem of the .pte (default: ``kind``).
        quantize: ``fp32`` | ``int8`` (PT2E + XNNPACKQuantizer; needs ``calibration``).
        calibration: example-input tuples run through the observed model (int8).
        input_names / output_names: names for the manifest (default ``input0``... / ``output0``...).
        layout: memory layout of the 4-D inputs and outputs, one of :data:`LAYOUTS`
            (``NHWC``: channels-last strides of the same logical NCHW shape).
        normalisation: what the image inputs are expected to hold.
        split: the model's split layer (shallow / step programs), else None.
        alignment: face alignment the model's inputs expect (``{"template", "zoom"}``).
        extra: the manifest's ``params``: settings the client needs (step size, eps, ...).
        delegate: lower to XNNPACK (False: portable kernels only; for comparisons).
        entry_points: further ExecuTorch methods of the same program,
            ``name -> (module, example_inputs)`` (e.g. the FMD step's ``prepare``); the main
            module is ``forward``.
    """

    kind: str
    model_id: str = ""
    program: str = ""
    quantize: str = "fp32"
    calibration: Sequence[tuple[torch.Tensor, ...]] | None = None
    input_names: Sequence[str] = ()
    output_names: Sequence[str] = ()
    layout: str = "NCHW"
    normalisation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    split: str | None = None
    alignment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    delegate: bool = True
    entry_points: dict[str, tuple[Any, tuple[torch.Tensor, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            raise InvalidInput("LowerOptions.kind must name the program kind (e.g. generator, pmt-step)")
        if self.quantize not in QUANTIZE:
            raise InvalidInput(f"quantize must be one of {', '.join(QUANTIZE)}; got {self.quantize!r}")
        if self.layout not in LAYOUTS:
            raise InvalidInput(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.quantize == "int8" and not self.calibration:
            raise InvalidInput("quantize='int8' needs calibration inputs (a few representative images)")
        self.program = self.program or self.kind


@dataclass
class Lowered:
    """Result of :func:`lower`: the program bytes and what the delegate took."""

    buffer: bytes
    delegates: list[str]             # backend id of every delegate call in the program
    operators: dict[str, int]        # non-delegated operators left in the program -> count
    exported: Any = None             # the torch.export ExportedProgram (after quantization)


@dataclass
class Exported:
    """What :func:`export_program` wrote: the ``pte``, its ``manifest`` (at ``manifest_path``)."""

    pte: Path
    manifest_path: Path
    manifest: Manifest
    lowered: Lowered


def _as_tuple(example_inputs) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise InvalidInput("example_inputs must be a tensor or a non-empty tuple of tensors")
    return inputs


def quantize_pt2e(module: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  calibration: Iterable[tuple[torch.Tensor, ...]]) -> nn.Module:
    """PT2E static int8 quantization for XNNPACK, calibrated on ``calibration``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(module, example_inputs, strict=False).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*_as_tuple(batch))
    return convert_pt2e(prepared)


def program_operators(exec_prog) -> tuple[list[str], dict[str, int]]:
    """(delegate backend ids, non-delegated operator -> count) of a lowered program."""
    from collections import Counter

    delegates: list[str] = []
    ops: Counter = Counter()
    for plan in exec_prog.executorch_program.execution_plan:
        delegates += [d.id for d in plan.delegates]
        for chain in plan.chains:
            for ins in chain.instructions:
                args = ins.instr_args
                if type(args).__name__ == "KernelCall":
                    op = plan.operators[args.op_index]
                    ops[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
    return delegates, dict(ops)


def lower(module: nn.Module, example_inputs, options: LowerOptions) -> Lowered:
    """``module`` at ``example_inputs``' shapes -> ExecuTorch program bytes (XNNPACK)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    inputs = tuple(in_layout(_as_tuple(example_inputs), options.layout))
    if isinstance(module, nn.Module):
        module = module.eval()
    if options.quantize == "int8":
        module = quantize_pt2e(module, inputs, options.calibration)
    with torch.no_grad():
        exported = torch.export.export(module, inputs, strict=False)
        programs = {"forward": exported}
        for name, (mod, ins) in options.entry_points.items():
            programs[name] = torch.export.export(mod.eval() if isinstance(mod, nn.Module) else mod,
                                                 _as_tuple(ins), strict=False)
    edge = to_edge_transform_and_lower(
        programs if options.entry_points else exported,
        partitioner=[XnnpackPartitioner()] if options.delegate else None,
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
    )
    exec_prog = edge.to_executorch()
    delegates, ops = program_operators(exec_prog)
    return Lowered(exec_prog.buffer, delegates, ops, exported)


def _describe(tensors: Sequence[torch.Tensor], names: Sequence[str], prefix: str, layout: str) -> list[dict]:
    out = []
    for i, t in enumerate(tensors):
        entry = {"name": names[i] if i < len(names) else f"{prefix}{i}", "shape": list(t.shape),
                 "dtype": str(t.dtype).removeprefix("torch.")}
        if t.dim() == 4:
            entry["layout"] = layout
        out.append(entry)
    return out


# BlazeFace keypoints the alignment templates use, in template order (photoveil.facemodels.align)
ALIGNMENT_LANDMARKS = ("right_eye", "left_eye", "nose_tip", "mouth_center")


def alignment_spec(alignment: dict[str, Any] | None, image: torch.Tensor | None) -> dict[str, Any] | None:
    """The manifest's ``alignment``: ``{"template", "zoom"}`` completed with what a phone
    needs to crop a face the way the host does: the crop size and the template's target
    points at that size (so the app need not know the template tables)."""
    if not alignment or image is None or image.dim() != 4 or "template" not in alignment:
        return alignment
    from photoveil.facemodels.align import template

    h, w = int(image.shape[2]), int(image.shape[3])
    if h != w:  # the templates are square crops
        return alignment
    points = template(h, float(alignment.get("zoom", 1.0)), alignment["template"])
    return {**alignment, "size": [h, w], "landmarks": list(ALIGNMENT_LANDMARKS),
            "points": [[round(float(x), 4), round(float(y), 4)] for x, y in points],
            "coordinates": "pixels of the crop, pixel centres at integers (OpenCV convention)",
            "transform": "least-squares similarity (Umeyama) from the detected landmarks to points; "
                         "bilinear warp, zeros outside the photo"}


def _channel_order(inputs: Sequence[torch.Tensor]) -> str:
    images = [t for t in inputs if t.dim() == 4]
    return "L" if images and images[0].shape[1] == 1 else "RGB"


def build_manifest(options: LowerOptions, inputs: tuple[torch.Tensor, ...], outputs: Sequence[torch.Tensor],
                   pte: Path, lowered: Lowered) -> Manifest:
    from importlib.metadata import version

    from photoveil import __version__

    return Manifest(
        kind=options.kind, program=pte.name, model_id=options.model_id, version=__version__,
        photoveil_version=__version__,
        inputs=_describe(inputs, options.input_names, "input", options.layout),
        outputs=_describe(outputs, options.output_names, "output", options.layout),
        entry_points=["forward", *options.entry_points], layout=options.layout,
        normalisation=options.normalisation, channel_order=_channel_order(inputs), split=options.split,
        alignment=alignment_spec(options.alignment, inputs[0]),
        params=dict(options.extra), quantization=options.quantize,
        backend="xnnpack" if options.delegate else "portable", delegates=len(lowered.delegates),
        non_delegated_ops=lowered.operators, sha256=sha256_file(pte), pte_bytes=pte.stat().st_size,
        torch_version=torch.__version__, executorch_version=version("executorch"),
    )


def export_program(module: nn.Module, example_inputs, options: LowerOptions, out_dir: str | os.PathLike
                   ) -> Exported:
    """Lower ``module`` and write ``out_dir/<program>.pte`` and its manifest.

    Raises:
        InvalidInput: ``out_dir`` already holds a different .pte (an artifact folder holds
            exactly one program).
    """
    inputs = _as_tuple(example_inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pte = out / f"{options.program}.pte"
    others = [p.name for p in out.glob("*.pte") if p != pte]
    if others:
        raise InvalidInput(f"{out} already holds {', '.join(others)}; an artifact folder holds exactly one "
                           "program: choose another --out folder")
    with torch.no_grad():
        outputs = module(*inputs)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    lowered = lower(module, inputs, options)
    pte.write_bytes(lowered.buffer)
    manifest = build_manifest(options, inputs, outputs, pte, lowered)
    return Exported(pte, write_manifest(out, manifest), manifest, lowered)
