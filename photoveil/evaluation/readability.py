"""Readability-witness records of a run (measured on every run with the ``image`` metrics).

What a person sees after the normalisation an eye does for free (:mod:`photoveil.readability`:
per-channel standardisation, 3x3 median, grayscale, half size), for every method:

* ``readable_ssim`` / ``readable_edge`` (evaluated_model ``image``): ``|SSIM|`` and the
  Sobel edge-map correlation of the normalised original and protected images, mean over the
  protected images with a 95 % normal-approximation CI (``ci_low``/``ci_high``);
  ``readable_ssim_far`` the SSIM of the far view (quarter size, :data:`photoveil.readability.FAR`),
  ``readable_ssim_blur`` / ``readable_edge_blur`` those of the out-of-focus view (Gaussian
  low-pass of the luminance as seen, no median, :data:`photoveil.readability.BLURRED`);
* ``readable_top1`` (every recognizer, and ``mean-unauthorized``): closed-set identification
  of the *normalised protected* query against the clean gallery; ``readable_clean_top1`` is
  the same on the normalised clean query (shows the recognizer still works on normalised
  faces, so a low ``readable_top1`` means the face is gone, not that normalisation broke
  the recognizer); ``readable_chance`` = 1 / identities. Wilson 95 % CIs.
  ``max-unauthorized``: the highest ``readable_top1`` among the unauthorized recognizers
  whose ``readable_clean_top1`` is at least twice chance (those that can read a normalised
  face at all) — the witness a method that claims visual privacy must bring near chance;
  ``readable_blur_top1`` / ``readable_blur_clean_top1`` (and its ``max-unauthorized``): the
  same on the out-of-focus view;
* ``readable_agreement_<key>`` / ``readable_cossim_<key>`` (every attribute model, e.g.
  gear gender / age / race): the attribute estimator on the normalised protected image
  agrees with its estimate on the clean image (argmax agreement, Wilson CI) / Eq. 11 CosSim;
  ``readable_clean_agreement_<key>`` on the normalised clean image.

A method that claims visual privacy is held to these, not to the plain SSIM (a colour cast
alone drives that to ~0).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from photoveil import readability as R
from photoveil.evaluation import metrics as M
from photoveil.facemodels.embed import embed

from photoveil.evaluation.metrics import wilson

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def mean_ci(values: torch.Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation 95 % CI of the mean of ``values`` ``[N]``."""
    v = values.double()
    m = v.mean().item()
    half = z * v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return m, m - half, m + half


# the views a recognizer is run on: metric prefix -> normalisation
RECOGNIZER_VIEWS = {"readable": R.DEFAULT, "readable_blur": R.BLURRED}


def image_witness(originals: torch.Tensor, protected: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per-image ``readable_ssim``, ``readable_edge``, ``readable_ssim_blur``, ``readable_edge_blur``
    and (images >= 44 px) ``readable_ssim_far`` ``[N]`` (in batches, no grad)."""
    far = min(originals.shape[-2:]) * R.FAR.scale >= 11  # the SSIM window fits the quarter-size view
    metrics = {"readable_ssim": lambda a, b: R.readable_ssim(a, b), "readable_edge": R.edge_similarity,
               "readable_ssim_blur": lambda a, b: R.readable_ssim(a, b, R.BLURRED),
               "readable_edge_blur": lambda a, b: R.edge_similarity(a, b, R.BLURRED),
               **({"readable_ssim_far": lambda a, b: R.readable_ssim(a, b, R.FAR)} if far else {})}
    out: dict[str, list[torch.Tensor]] = {k: [] for k in metrics}
    with torch.no_grad():
        for a, b in zip(originals.split(batch_size), protected.split(batch_size)):
            for k, f in metrics.items():
                out[k].append(f(a, b))
    return {k: torch.cat(v) for k, v in out.items()}


def views(images: torch.Tensor, batch_size: int = 64, settings: R.Normalisation = R.DEFAULT) -> torch.Tensor:
    """:func:`photoveil.readability.recognizer_view` in batches."""
    with torch.no_grad():
        return torch.cat([R.recognizer_view(c, settings) for c in images.split(batch_size)])


def measure(ctx: RunContext) -> list[dict]:
    """The readability records of the run's current protection (module doc)."""
    from photoveil.evaluation.attacks.attributes import attribute_outputs

    cfg, prot, data = ctx.cfg, ctx.protection, ctx.data
    auth, params = prot.authorized, prot.params
    records: list[dict] = []

    def add(model, metric, value, role, n, ci=None):
        extra = {} if ci is None else {"ci_low": round(ci[0], 6), "ci_high": round(ci[1], 6)}
        records.append(ctx.record(authorized=auth, evaluated_model=model, metric=metric, value=value,
                                  attack="readability", params=params, role=role, n=n, **extra))

    for metric, per_image in image_witness(prot.originals, prot.images, cfg.batch_size).items():
        m, lo, hi = mean_ci(per_image)
        add("image", metric, m, "image", len(per_image), (lo, hi))

    index = {str(p): i for i, p in enumerate(data.protected_paths)}
    q = [index[str(p)] for p in data.queries if str(p) in index]
    if len(q) == len(data.queries) and q:
        ql, gl = torch.tensor(data.query_labels), torch.tensor(data.gallery_labels)
        n = len(q)
        chance = 1.0 / len(set(data.gallery_labels))
        by_view = {prefix: (views(prot.images[q], cfg.batch_size, settings),
                            views(prot.originals[q], cfg.batch_size, settings))
                   for prefix, settings in RECOGNIZER_VIEWS.items()}
        for prefix, (prot_view, clean_view) in by_view.items():
            unauth, usable = [], []
            for name in ctx.recognizers:
                net, ref = ctx.model(name), ctx.clean[name]
                ge = torch.stack([ref[str(p)] for p in data.gallery])
                role = "authorized" if name in prot.setting else "unauthorized"
                top = M.identification_top1(ge, gl, embed(net, ctx.seen_by(name, prot_view), cfg.batch_size), ql)
                clean_top = M.identification_top1(ge, gl, embed(net, ctx.seen_by(name, clean_view),
                                                                cfg.batch_size), ql)
                add(name, f"{prefix}_top1", top, role, n, wilson(top, n))
                add(name, f"{prefix}_clean_top1", clean_top, role, n, wilson(clean_top, n))
                if prefix == "readable":
                    add(name, "readable_chance", chance, role, n)
                if role == "unauthorized":
                    unauth.append(top)
                    if clean_top >= 2 * chance:  # works on normalised clean faces: a witness
                        usable.append(top)
            if unauth:
                add("mean-unauthorized", f"{prefix}_top1", sum(unauth) / len(unauth), "aggregate", len(unauth))
            if usable:  # the strongest witness among the recognizers that read normalised clean faces
                best = max(usable)
                add("max-unauthorized", f"{prefix}_top1", best, "aggregate", n, wilson(best, n))
        prot_view, clean_view = by_view["readable"]  # attribute estimators: the main view only
        for name in ctx.attribute_models:
            net = ctx.model(name)
            a0 = attribute_outputs(net, prot.originals[q], cfg.batch_size)
            a1 = attribute_outputs(net, prot_view, cfg.batch_size)
            ac = attribute_outputs(net, clean_view, cfg.batch_size)
            for key, v0 in a0.items():
                if v0.shape[1] < 2:
                    continue
                agree = (a1[key].argmax(1) == v0.argmax(1)).float().mean().item()
                clean_agree = (ac[key].argmax(1) == v0.argmax(1)).float().mean().item()
                add(name, f"readable_agreement_{key}", agree, "attribute", n, wilson(agree, n))
                add(name, f"readable_clean_agreement_{key}", clean_agree, "attribute", n, wilson(clean_agree, n))
                add(name, f"readable_cossim_{key}", M.attribute_cossim(v0, a1[key]).mean().item(), "attribute", n)
    return records


def summary_rows(records: list[dict]) -> list[list]:
    """Rows ``[authorized, evaluated_model, metric, value, 95 % CI, n]`` of the readability records."""
    rows = []
    for r in records:
        if r.get("attack") != "readability":
            continue
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
        rows.append([r["authorized"], r["evaluated_model"], r["metric"], r["value"], ci, r["n"]])
    return rows


__all__ = ["RECOGNIZER_VIEWS", "image_witness", "mean_ci", "measure", "summary_rows", "views", "wilson"]
