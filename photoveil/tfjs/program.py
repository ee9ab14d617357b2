"""Run a list of steps as a torch module, and split it at any step index.

:class:`GraphProgram` executes :class:`~photoveil.tfjs.ops.Step` modules in a fixed
order over numbered value slots, freeing each slot after its last reader. Because the
order is fixed, a program splits at any step ``k`` into ``shallow`` and ``rest`` with
``rest(shallow(x)) == forward(x)``, carrying the tensors alive at the cut as a tuple.
:class:`TFJSGraph` is a whole imported graph with its input/output names.
"""
from __future__ import annotations

from torch import nn

from photoveil.errors import InvalidInput
from photoveil.tfjs.ops import Step


class GraphProgram(nn.Module):
    """Run ``steps`` in order over value slots: inputs fill ``in_slots``, outputs read ``out_slots``.

    ``forward(*inputs)`` also accepts one tuple (what a ``shallow`` half returns) so that
    ``rest(shallow(x))`` works for cuts that carry several tensors.
    """

    def __init__(self, steps: list[Step], in_slots: tuple[int, ...], out_slots: tuple[int, ...]):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.in_slots, self.out_slots = tuple(in_slots), tuple(out_slots)
        last_use: dict[int, int] = {}
        for i, st in enumerate(steps):
            for s in st.ins:
                last_use[s] = i
        frees: list[list[int]] = [[] for _ in steps]
        for s, i in last_use.items():
            if s not in self.out_slots:
                frees[i].append(s)
        self._frees = [tuple(f) for f in frees]
        produced = set(self.in_slots) | {st.out for st in steps}
        missing = [s for st in steps for s in st.ins if s not in produced]
        missing += [s for s in self.out_slots if s not in produced]
        if missing:
            raise ValueError(f"graph program reads slots {sorted(set(missing))} that nothing produces")

    def forward(self, *inputs):
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.in_slots):
            raise InvalidInput(f"expected {len(self.in_slots)} input tensor(s), got {len(inputs)}")
        vals = dict(zip(self.in_slots, inputs))
        for step, free in zip(self.steps, self._frees):
            vals[step.out] = step(*[vals[s] for s in step.ins])
            for s in free:
                del vals[s]
        outs = tuple(vals[s] for s in self.out_slots)
        return outs[0] if len(outs) == 1 else outs

    def __len__(self) -> int:
        return len(self.steps)

    def live_at(self, k: int) -> tuple[int, ...]:
        """Slots produced before step ``k`` (or inputs) that steps ``>= k`` or outputs read."""
        if not 0 <= k <= len(self.steps):
            raise InvalidInput(f"split index {k} out of range; accepted: 0..{len(self.steps)}")
        before = set(self.in_slots) | {st.out for st in list(self.steps)[:k]}
        needed = {s for st in list(self.steps)[k:] for s in st.ins} | set(self.out_slots)
        return tuple(sorted(before & needed))

    def split(self, k: int) -> tuple[GraphProgram, GraphProgram]:
        """``(shallow, rest)``: steps ``[0,k)`` and ``[k,n)`` sharing the same weights."""
        live = self.live_at(k)
        steps = list(self.steps)
        return GraphProgram(steps[:k], self.in_slots, live), GraphProgram(steps[k:], live, self.out_slots)

    def clean_cuts(self) -> list[int]:
        """Step indices where exactly one tensor crosses the cut (sequential split points)."""
        return [k for k in range(1, len(self.steps)) if len(self.live_at(k)) == 1]

    def layers(self) -> list[tuple[int, str, str]]:
        """``(index, op, node name)`` of every step, in execution order."""
        return [(i, st.op, st.node) for i, st in enumerate(self.steps)]


class TFJSGraph(GraphProgram):
    """A whole imported graph: ``forward(x)`` with ``x`` NCHW (for a 4-D placeholder).

    Attributes: ``input_name``, ``output_names`` (graph nodes, in ``forward``'s output
    order), ``output_keys`` (signature keys, when the model.json has a signature) and
    ``input_shape`` (the nominal NCHW shape the graph was built with).
    """

    def __init__(self, steps, in_slot, out_slots, input_name, output_names, output_keys, input_shape):
        super().__init__(steps, (in_slot,), tuple(out_slots))
        self.input_name, self.output_names = input_name, list(output_names)
        self.output_keys, self.input_shape = list(output_keys), tuple(input_shape)

    def index_after(self, node_name: str) -> int:
        """The split index just after the (last) step that computes ``node_name``."""
        hits = [i for i, st in enumerate(self.steps) if st.node == node_name]
        if not hits:
            raise InvalidInput(f"no step computes node {node_name!r}")
        return hits[-1] + 1
