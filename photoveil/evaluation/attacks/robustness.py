"""``robustness``: the abuse metrics after each server-side transform (JPEG 95/75/50, 0.5x
down-scale and back, Gaussian blur sigma 1; ``EvalConfig.transforms``) applied to the
protected upload — and, for ``clean_*``, to the unprotected one."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from photoveil.evaluation.attacks.abuse import measure

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def run(ctx: RunContext) -> list[dict]:
    t0 = time.perf_counter()
    records = []
    for t in ctx.cfg.transforms:
        records += measure(ctx, ctx.protection.uploads, t, ctx.protection.params, attack="robustness")
    ctx.timings["robustness_s"] = time.perf_counter() - t0
    return records
