"""``linkage``: identification against a gallery of *protected* photos.

Every photo leaves the phone protected, so whoever enrols people from what the phone sends
holds protected galleries. Two parties do:

* the provider, when it enrols its users from their uploads (``abuse`` measures it with a
  clean gallery, as when the provider enrols from another source): the authorized
  recognizer's ``linkage_top1``;
* an attacker holding one labelled protected upload per person (a leak of the provider's
  store, a scrape of named profiles) who wants to name that person's other uploads: each
  unauthorized recognizer's ``linkage_top1``, reading every upload re-aligned onto its own
  template as in ``abuse``. A protection whose outputs for one person resemble each other
  more than they resemble the person's face lets this attacker link what ``abuse`` says it
  cannot identify.

The gallery (one image per test identity, ``data.gallery``) is protected by the run's own
protector, in the authorized geometry; the queries are the run's protected uploads. Records:
``linkage_top1`` per recognizer and its ``mean-unauthorized``, and ``linkage_chance`` (one in
the number of test identities).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from photoveil.evaluation import metrics as M
from photoveil.facemodels.embed import embed

if TYPE_CHECKING:
    from photoveil.evaluation.context import RunContext


def run(ctx: RunContext) -> list[dict]:
    cfg, data, prot = ctx.cfg, ctx.data, ctx.protection
    t0 = time.perf_counter()
    gallery = prot.protector.protect(ctx.faces.get(data.gallery, prot.size, model=prot.setting[0]))
    ctx.timings["linkage_protect_s"] = ctx.timings.get("linkage_protect_s", 0.0) + time.perf_counter() - t0
    queries = torch.stack([prot.uploads[str(p)] for p in data.queries])
    gallery_labels, query_labels = torch.tensor(data.gallery_labels), torch.tensor(data.query_labels)
    records = [ctx.record(authorized=prot.authorized, evaluated_model=prot.authorized, metric="linkage_chance",
                          value=1 / len(data.gallery), attack="linkage", params=prot.params, role="aggregate",
                          n=len(data.queries))]
    unauth = []
    for name in ctx.recognizers:
        net = ctx.model(name)
        role = "authorized" if name in prot.setting else "unauthorized"
        ge = embed(net, ctx.seen_by(name, gallery), cfg.batch_size)
        qe = embed(net, ctx.seen_by(name, queries), cfg.batch_size)
        top1 = M.identification_top1(ge, gallery_labels, qe, query_labels)
        records.append(ctx.record(authorized=prot.authorized, evaluated_model=name, metric="linkage_top1",
                                  value=top1, attack="linkage", params=prot.params, role=role, n=len(data.queries)))
        if role == "unauthorized":
            unauth.append(top1)
    if unauth:
        records.append(ctx.record(authorized=prot.authorized, evaluated_model="mean-unauthorized",
                                  metric="linkage_top1", value=sum(unauth) / len(unauth), attack="linkage",
                                  params=prot.params, role="aggregate", n=len(unauth)))
    return records
