"""On-device gradient-step programs: trace a step module that calls ``torch.autograd.grad``
into one plain graph that ``torch.export`` and the XNNPACK delegate accept.

``torch.export`` cannot trace ``torch.autograd.grad``; ``make_fx(..., tracing_mode="real")``
can: it runs the step once on real tensors and records every aten op of the forward *and*
of the backward as one flat graph with constant weights. :func:`trace_step` does that with
a decomposition table that rewrites the backward operators into forward operators XNNPACK
implements:

``convolution_backward`` (input gradient, constant weight)
    stride 1: a plain convolution with the flipped, in/out-swapped weight (XNNPACK's
    fastest path); stride > 1: *polyphase* — one stride-1 convolution computes the
    ``s*s`` output phases from the weight's sub-kernels, a depth-to-space permute
    interleaves them (:func:`polyphase_input_grad`); otherwise a transposed convolution.
    XNNPACK's strided deconvolution measured 3-10x slower than eager here, the polyphase
    form about as fast. The rewritten weights are *separate* constants: XNNPACK packs a
    constant shared by a conv and a deconv in one delegate for only one of them (wrong
    gradients, executorch 1.5.1).
``max_pool2d_with_indices_backward``
    ``exact``: a ``scatter_add`` of the output gradient onto zeros at the forward's argmax
    indices (portable kernel; works around executorch 1.5.1's portable backward kernel,
    which does not zero its output, upstream issue #21686).
    ``fast``: no indices, no scatter. Window offset ``(kh, kw)`` reads a stride-1 slice of
    one phase of the (space-to-depth permuted) input; ``g * [x == max]`` (mask as
    ``clamp((x - max) * BIG + 1, 0, 1)``) is padded back into place, phases are summed
    and interleaved. All slice / pad / mul / add / clamp / permute: XNNPACK runs it, and
    the forward's ``max_pool2d_with_indices`` becomes a plain ``max_pool2d``. It differs
    from PyTorch only on exact ties inside a window (PyTorch routes the gradient to the
    first maximum, this to every maximum); after a ReLU the common tie, all zeros, is
    masked out by the ReLU's own gradient anyway.
``avg_pool2d_backward`` (no portable kernel at all)
    non-overlapping windows: the scaled gradient copied into every phase, interleaved.
``constant_pad_nd`` with negative pads (the backward of ``F.pad``; the portable kernel
    rejects them): slices.
``threshold_backward`` (ReLU gradient)
    ``grad * clamp((y - t) * BIG, 0, 1)``: a multiply by the ``y > t`` mask, built from
    mul + clamp instead of a comparison (exact for ``y - t`` outside ``(0, 1/BIG)``).
``sign``
    ``clamp(g * BIG, -1, 1)`` (exact for ``|g| >= 1/BIG`` and for 0).

After tracing, tensors made by the rewrites become frozen parameters (XNNPACK takes
parameters as static weights, lifted constants as per-call inputs), unused max-pool
indices are dropped and duplicate max-pools merged.

``BIG`` is 1e30: a float32 value between 0 and 1e-30 is the only place the fast forms
differ from the exact ones, and the gradients here are many orders of magnitude larger.
``mode="exact"`` keeps the conv / avg-pool / pad rewrites, the scatter-add max-pool
backward, and leaves ReLU-backward and sign as they are.

The step modules themselves help: ``PMTStep`` / ``FMDStep`` back-propagate the written-out
gradient of their loss w.r.t. the features / logits (``autograd.grad(outputs, x,
grad_outputs=...)``), so the traced graph has no loss reduction to a scalar and back.

Example::

    >>> gm = trace_step(pmt.step, (x_t, x, noise, theta))          # fast mode
    >>> torch.testing.assert_close(gm(x_t, x, noise, theta), pmt.step(x_t, x, noise, theta))
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

aten = torch.ops.aten

BIG = 1e30
MODES = ("fast", "exact")


def _out_padding(in_size: int, out_size: int, k: int, s: int, p: int, d: int) -> int:
    """``output_padding`` that makes a transposed conv map ``out_size`` back to ``in_size``."""
    op = in_size - ((out_size - 1) * s - 2 * p + d * (k - 1) + 1)
    if not 0 <= op < max(s, d):
        raise RuntimeError(f"cannot invert a conv of size {in_size}->{out_size} (k={k}, s={s}, p={p}, d={d})")
    return op


def _is_constant(t: torch.Tensor) -> bool:
    """Whether ``t`` is a constant of the graph being traced (a weight, not a computed value)."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode, get_proxy_slot

    mode = get_proxy_mode()
    if mode is None:
        return isinstance(t, nn.Parameter)
    slot = get_proxy_slot(t, mode.tracer, None)
    return slot is None or slot.proxy.node.op == "get_attr"


def conv_backward_input(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask):
    """``convolution_backward`` whose only requested output is the input gradient (2-D,
    non-transposed forward, constant weight), as a forward op XNNPACK runs:

    * stride 1, no groups: a plain convolution of the output gradient with the flipped,
      in/out-swapped weight (``padding' = d (k - 1) - p``), XNNPACK's fastest path;
    * otherwise: a transposed convolution with the weight.

    Either way the weight is a *separate* constant: XNNPACK (executorch 1.5.1) packs a
    constant shared by a convolution and a deconvolution in one delegate for one of them
    only and computes garbage for the other. Anything else: not handled (``NotImplemented``).
    """
    if transposed or weight.dim() != 4 or output_mask[1] or output_mask[2] or not output_mask[0]:
        return NotImplemented
    if not _is_constant(weight):
        return NotImplemented
    k = weight.shape[-2:]
    op = [_out_padding(inp.shape[2 + i], grad_out.shape[2 + i], k[i], stride[i], padding[i], dilation[i])
          for i in range(2)]
    if groups == 1 and list(dilation) == [1, 1]:
        if list(stride) == [1, 1] and op == [0, 0] and all(k[i] - 1 - padding[i] >= 0 for i in range(2)):
            flipped = _constant(lambda: weight.detach().flip(2, 3).transpose(0, 1).contiguous())
            pad = [k[i] - 1 - padding[i] for i in range(2)]
            grad_in = aten.convolution.default(grad_out, flipped, None, [1, 1], pad, [1, 1], False, [0, 0], 1)
            return grad_in, None, None
        if min(stride) > 1:
            return polyphase_input_grad(grad_out, weight, list(stride), list(padding), inp.shape[-2:]), None, None
    w = _constant(lambda: weight.detach().clone())
    grad_in = aten.convolution.default(grad_out, w, None, list(stride), list(padding), list(dilation),
                                       True, op, groups)
    return grad_in, None, None


def polyphase_input_grad(grad_out, weight, stride, padding, in_hw):
    """Input gradient of a strided conv (groups 1, dilation 1) without a deconvolution.

    Per dimension, input pixel ``i = s*q + a - p`` of phase ``a = (i + p) mod s`` gets
    ``sum_m g[q - m] * W[a + s*m]``: a stride-1 correlation of the output gradient with
    the phase's sub-kernel, flipped. One convolution computes all ``s*s`` phases as
    ``s*s * C_in`` channels (sub-kernels zero-padded to ``ceil(k / s)``), a depth-to-space
    permute interleaves them and a slice drops the padding. XNNPACK's strided
    deconvolution (executorch 1.5.1) is ~3-10x slower than this.
    """
    c_out, c_in, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    big_kh, big_kw = -(-kh // sh), -(-kw // sw)
    o_h, o_w = grad_out.shape[-2:]
    h, w = in_hw

    def make_phases():
        wt = weight.detach()
        out = torch.zeros(sh * sw, c_in, c_out, big_kh, big_kw, dtype=wt.dtype, device=wt.device)
        for a in range(sh):
            for b in range(sw):
                sub = wt[:, :, a::sh, b::sw]  # [C_out, C_in, <=K, <=K]
                sub = torch.nn.functional.pad(sub, (0, big_kw - sub.shape[3], 0, big_kh - sub.shape[2]))
                out[a * sw + b] = sub.flip(2, 3).transpose(0, 1)
        return out.reshape(sh * sw * c_in, c_out, big_kh, big_kw).contiguous()

    def make_shuffle():  # one-hot s x s deconv kernel: phase-major channel -> its pixel
        e = torch.zeros(sh * sw * c_in, 1, sh, sw, dtype=weight.dtype, device=weight.device)
        for a in range(sh):
            for b in range(sw):
                e[(a * sw + b) * c_in:(a * sw + b + 1) * c_in, 0, a, b] = 1.0
        return e.view(sh * sw, c_in, 1, sh, sw).transpose(0, 1).reshape(c_in * sh * sw, 1, sh, sw)

    phases_w = _constant(make_phases)
    # phase outputs q = 0 .. L-1 (L = O + K - 1, the full correlation) need g[q - m], m < K:
    # pad K-1 on every side, plus enough on the bottom/right that s*L covers p + H
    extra_h = max(0, -(-(ph + h) // sh) - (o_h + big_kh - 1))
    extra_w = max(0, -(-(pw + w) // sw) - (o_w + big_kw - 1))
    g = aten.constant_pad_nd.default(grad_out, [big_kw - 1, big_kw - 1 + extra_w, big_kh - 1, big_kh - 1 + extra_h], 0.0)
    phases = aten.convolution.default(g, phases_w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    if sh == sw:  # depth-to-space as a permute (XNNPACK's deconvolution is slow here)
        full = _phases_to_space(phases, sh, c_in)
    else:  # channels back to c-major, then a one-hot grouped deconvolution
        lp, lq = phases.shape[-2:]
        phases = aten.view.default(phases, [phases.shape[0], sh * sw, c_in, lp, lq])
        phases = aten.clone.default(aten.permute.default(phases, [0, 2, 1, 3, 4]),
                                    memory_format=torch.contiguous_format).view(phases.shape[0], -1, lp, lq)
        full = aten.convolution.default(phases, _constant(make_shuffle), None, [sh, sw], [0, 0], [1, 1],
                                        True, [0, 0], c_in)
    full = aten.slice.Tensor(full, 2, ph, ph + h)
    return aten.slice.Tensor(full, 3, pw, pw + w)


def maxpool_backward_exact(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """``max_pool2d_with_indices_backward`` as a scatter-add onto zeros (exact)."""
    n, c, h, w = inp.shape
    zeros = aten.zeros.default([n, c, h * w], dtype=grad_out.dtype, device=grad_out.device)
    out = aten.scatter_add.default(zeros, 2, aten.view.default(indices, [n, c, -1]),
                                   aten.view.default(grad_out, [n, c, -1]))
    return aten.view.default(out, [n, c, h, w])


def _constant(make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A tensor made outside the trace: a constant of the graph, not ops run on device."""
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    with disable_proxy_modes_tracing():
        return make()


def _onehot_window(c: int, kh: int, kw: int, dtype, device) -> torch.Tensor:
    """``[c*kh*kw, 1, kh, kw]``: channel ``c*K + k`` picks window offset ``k`` of channel ``c``."""
    return _constant(lambda: torch.eye(kh * kw, dtype=dtype, device=device)
                     .view(kh * kw, 1, kh, kw).repeat(c, 1, 1, 1))


def _space_to_phases(t, s: int):
    """``[N,C,s*P,s*P] -> [N, s*s*C, P, P]`` with channel ``(a*s + b)*C + c`` holding
    ``t[..., s*i + a, s*j + b]`` (phase-major, so one phase is a stride-1 channel slice)."""
    n, c, h, w = t.shape
    t = aten.view.default(t, [n, c, h // s, s, w // s, s])
    t = aten.permute.default(t, [0, 3, 5, 1, 2, 4])
    return aten.clone.default(t, memory_format=torch.contiguous_format).view(n, s * s * c, h // s, w // s)


def _phases_to_space(t, s: int, c: int):
    """Inverse of :func:`_space_to_phases`."""
    n, _, p, q = t.shape
    t = aten.view.default(t, [n, s, s, c, p, q])
    t = aten.permute.default(t, [0, 3, 4, 1, 5, 2])
    return aten.clone.default(t, memory_format=torch.contiguous_format).view(n, c, p * s, q * s)


def maxpool_backward_fast(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """``max_pool2d_with_indices_backward`` without indices or scatter, from slices, pads,
    mul / add / clamp and a space-to-depth permute.

    Window offset ``(kh, kw)`` of output ``o`` reads input ``s*o + kh``, i.e. phase
    ``(kh % s, kw % s)`` of the input at ``o + (kh // s, kw // s)``: a stride-1 slice of
    the phase. Its gradient share is ``g[o] * [x == max]`` (the mask as ``clamp((x - max) *
    BIG + 1, 0, 1)``), padded back into place within the phase; the phases are summed and
    interleaved back to full resolution.
    """
    kh, kw = (list(kernel_size) * 2)[:2]
    sh, sw = (list(stride) * 2)[:2] if stride else (kh, kw)
    pads = (list(padding) * 2)[:2]
    dil = (list(dilation) * 2)[:2]
    if ceil_mode or any(pads) or dil != [1, 1] or sh != sw or sh > kh or sw > kw:
        return maxpool_backward_exact(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices)
    s = sh
    n, c, h, w = inp.shape
    oh, ow = grad_out.shape[-2:]
    ph = max(oh + (kh - 1) // s, -(-h // s))
    pw = max(ow + (kw - 1) // s, -(-w // s))
    pooled = aten.max_pool2d.default(inp, [kh, kw], [s, s], [0, 0], [1, 1], False)
    x = aten.constant_pad_nd.default(inp, [0, s * pw - w, 0, s * ph - h], 0.0)
    phases_x = _space_to_phases(x, s)
    shares: dict[int, object] = {}
    for a_h in range(kh):
        for a_w in range(kw):
            phase = (a_h % s) * s + a_w % s
            dh, dw = a_h // s, a_w // s
            xk = aten.slice.Tensor(phases_x, 1, phase * c, (phase + 1) * c)
            xk = aten.slice.Tensor(aten.slice.Tensor(xk, 2, dh, dh + oh), 3, dw, dw + ow)
            mask = aten.clamp.default(aten.add.Tensor(aten.mul.Tensor(aten.sub.Tensor(xk, pooled), BIG), 1.0), 0.0, 1.0)
            share = aten.constant_pad_nd.default(aten.mul.Tensor(mask, grad_out),
                                                 [dw, pw - ow - dw, dh, ph - oh - dh], 0.0)
            shares[phase] = share if phase not in shares else aten.add.Tensor(shares[phase], share)
    stacked = shares[0] if s == 1 else aten.cat.default([shares[i] for i in range(s * s)], 1)
    full = _phases_to_space(stacked, s, c)
    return aten.slice.Tensor(aten.slice.Tensor(full, 2, 0, h), 3, 0, w)


def avgpool_backward(grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """``avg_pool2d_backward`` (no portable kernel in executorch 1.5.1).

    Non-overlapping windows (kernel == stride, no padding): every input pixel of a window
    gets ``g / k^2``: the scaled gradient copied into all ``s*s`` phases and interleaved
    (depth-to-space), zero-padded where floor mode dropped rows/columns. Otherwise
    PyTorch's own decomposition.
    """
    kh, kw = (list(kernel_size) * 2)[:2]
    sh, sw = (list(stride) * 2)[:2] if stride else (kh, kw)
    n, c, h, w = inp.shape
    oh, ow = grad_out.shape[-2:]
    if (kh, kw) == (sh, sw) and sh == sw and not any(padding) and divisor_override is None:
        s = sh

        def counts():  # elements per window (fewer in the clipped last windows of ceil mode)
            ch = torch.tensor([min(s * o + kh, h) - s * o for o in range(oh)], dtype=grad_out.dtype)
            cw = torch.tensor([min(s * o + kw, w) - s * o for o in range(ow)], dtype=grad_out.dtype)
            return torch.outer(ch, cw).view(1, 1, oh, ow).to(grad_out.device)

        g = aten.div.Tensor(grad_out, _constant(counts)) if ceil_mode else aten.mul.Tensor(grad_out, 1.0 / (kh * kw))
        full = _phases_to_space(aten.cat.default([g] * (s * s), 1) if s > 1 else g, s, c)
        if s * oh >= h and s * ow >= w:
            return aten.slice.Tensor(aten.slice.Tensor(full, 2, 0, h), 3, 0, w)
        return aten.constant_pad_nd.default(full, [0, w - s * ow, 0, h - s * oh], 0.0)
    from torch._decomp import decomposition_table

    return decomposition_table[aten.avg_pool2d_backward.default](
        grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def constant_pad_crop(t, pad, value=0.0):
    """``constant_pad_nd`` with negative pads (a crop: what the backward of ``F.pad``
    emits) as stride-1 slices, then a pad with the non-negative parts. The portable
    kernel rejects negative pads. Non-negative pads: left as they are."""
    if all(p >= 0 for p in pad):
        return NotImplemented
    for i in range(len(pad) // 2):
        dim = t.dim() - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        if lo < 0 or hi < 0:
            t = aten.slice.Tensor(t, dim, max(-lo, 0), t.shape[dim] - max(-hi, 0))
    return aten.constant_pad_nd.default(t, [max(p, 0) for p in pad], value)


def threshold_backward_fast(grad, y, threshold):
    """``grad * (y > threshold)`` with the mask as ``clamp((y - t) * BIG, 0, 1)``."""
    if threshold != 0:
        y = aten.sub.Tensor(y, threshold)
    return aten.mul.Tensor(grad, aten.clamp.default(aten.mul.Tensor(y, BIG), 0.0, 1.0))


def sign_fast(g):
    """``sign(g)`` as ``clamp(g * BIG, -1, 1)``."""
    return aten.clamp.default(aten.mul.Tensor(g, BIG), -1.0, 1.0)


def decompositions(mode: str = "fast") -> dict:
    """The ``make_fx`` decomposition table of ``mode`` (``fast`` | ``exact``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    table: dict = {aten.convolution_backward.default: conv_backward_input,
                   aten.avg_pool2d_backward.default: avgpool_backward,
                   aten.constant_pad_nd.default: constant_pad_crop}
    if mode == "exact":
        table[aten.max_pool2d_with_indices_backward.default] = maxpool_backward_exact
    else:
        table[aten.max_pool2d_with_indices_backward.default] = maxpool_backward_fast
        table[aten.threshold_backward.default] = threshold_backward_fast
        table[aten.sign.default] = sign_fast
    return table


def _strip_unused_indices(gm: torch.fx.GraphModule) -> None:
    """``max_pool2d_with_indices`` whose indices nobody reads -> ``max_pool2d`` (XNNPACK)."""
    import operator

    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten.max_pool2d_with_indices.default:
            continue
        users = list(node.users)
        if not all(u.target is operator.getitem and u.args[1] == 0 for u in users):
            continue
        with gm.graph.inserting_after(node):
            plain = gm.graph.call_function(aten.max_pool2d.default, node.args, node.kwargs)
        for u in users:
            u.replace_all_uses_with(plain)
            gm.graph.erase_node(u)
        gm.graph.erase_node(node)


def _dedupe(gm: torch.fx.GraphModule, targets: tuple) -> None:
    """Merge calls of ``targets`` with identical arguments (the fast max-pool backward
    recomputes the forward's pooled maximum; this reuses it)."""
    seen: dict = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        key = (node.target, repr(node.args), repr(node.kwargs))
        if key in seen:
            node.replace_all_uses_with(seen[key])
            gm.graph.erase_node(node)
        else:
            seen[key] = node


def _constants_as_parameters(gm: torch.fx.GraphModule) -> None:
    """Re-register every tensor constant of the graph as a frozen ``nn.Parameter``.

    ``make_fx`` stores tensors created during tracing (the rewrites' weights) as plain
    attributes; ``torch.export`` lifts those as *constants*, which the XNNPACK delegate
    receives as runtime inputs (weights re-packed on every call). Parameters become static
    weights packed once at load.
    """
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner, _, name = node.target.rpartition(".")
        mod = gm.get_submodule(owner) if owner else gm
        value = getattr(mod, name)
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and value.is_floating_point():
            delattr(mod, name)
            mod.register_parameter(name, nn.Parameter(value.detach(), requires_grad=False))


def _strip_aliases(gm: torch.fx.GraphModule) -> None:
    """Drop ``aten.alias`` / ``aten.detach`` nodes (no-ops in a traced, grad-free graph)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in (aten.alias.default, aten.detach.default):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def trace_step(step: Callable | nn.Module, example_inputs: Sequence[torch.Tensor], mode: str = "fast"
               ) -> torch.fx.GraphModule:
    """One step of a gradient-based protector as a flat, autograd-free ``GraphModule``.

    ``step(*example_inputs)`` may call ``torch.autograd.grad`` (PMTStep, FMDStep). The
    returned module computes the same function of its inputs for inputs of the same
    shapes; weights become constants of the graph. Export it with
    ``torch.export.export(gm, example_inputs)``.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    if isinstance(step, nn.Module):
        step.eval()
    inputs = tuple(t.detach() for t in example_inputs)
    gm = make_fx(step, decomposition_table=decompositions(mode), tracing_mode="real")(*inputs)
    _strip_aliases(gm)
    gm.graph.eliminate_dead_code()
    _strip_unused_indices(gm)
    _dedupe(gm, (aten.max_pool2d.default,))
    gm.graph.eliminate_dead_code()
    _constants_as_parameters(gm)
    gm.graph.lint()
    gm.recompile()
    return gm
