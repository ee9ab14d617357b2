"""Training losses of the protective perturbation generator (Ye et al., MMSys'22, Eq. 4).

Classification (Algorithm 1)::

    L = w_t * CE(target(x'), y) - w_aux * min(CE(aux(x'), y), cap) + w_ssim * S(x, x')

``S`` is ``|SSIM|`` per image (``ssim_mode="abs"``, default) or the paper's signed SSIM.
Minimising signed SSIM drives it towards -1, an *inverted* image that a person still
reads; the paper therefore reports |SSIM|, and optimising the reported quantity drives
the structure towards 0 instead. The per-image ``cap`` on the auxiliary CE (default 5,
i.e. p(y) < 0.7 %) bounds the only term that is unbounded below: without it the generator
can keep lowering the loss by making aux ever more confidently wrong, at the expense of
target accuracy; past the cap an image contributes no aux gradient. ``cap=None`` is the
paper's unbounded loss.

Face variant (no identity labels needed — the ranking term below uses them only to leave other
photos of the same person out of its negatives — so the generator never has to know who is in
the picture)::

    L = w_t * (1 - cos(T(x'), T(x))) + w_aux * relu(cos(A(x'), A(x)) - margin) + w_ssim * S(x, x')

The target's embedding of the protected face stays where the clean face's embedding is
(so the provider's gallery still matches), the auxiliary recognizer's embedding is pushed
until orthogonal to the clean one (cosine is bounded, so no cap is needed). With
``target_mean`` (``mu``, the mean unit clean target embedding) the centred term
``w_tc * (1 - cos(T(x') - mu, T(x) - mu))`` is added: what tells people apart is the part of an
embedding off the mean face, and where every face shares most of its direction (face-api's
descriptors: cosine ~0.9 between people) that part can turn far at little cost in plain cosine.
With ``labels`` as well, the ranking term ``w_tr * CE(RANK_SCALE * C, arange(N))`` is added,
``C[i, j]`` the centred cosine of ``T(x'_i)`` to ``T(x_j)``: each protected face must stay nearer
its own clean face than the batch's other people (columns of the same identity are left out),
which is what the provider's gallery match needs — a margin, not every direction kept. A
``rank_bank`` of earlier batches' clean embeddings adds negatives: a gallery holds more people
than a batch.
The readability terms' aux gap (:func:`gap_term`) is the opposite wish on the aux recognizer:
the protected face, seen normalised, must not be nearer its own clean face than the batch's
other people on average, which is what a gallery search reads (the plain aux term only pushes
the cosine itself down, and a face pushed to cosine 0 is still found when others sit lower).
The link term (:func:`link_term`) asks the same of protected faces among themselves: two
protected photos of one person must not be nearer each other, for the aux, than photos of other
people, or whoever holds one labelled upload per person names the rest (the ``linkage`` attack).

Shapes: images ``[N, C, H, W]`` in [0, 1] with H, W >= 11; logits ``[N, K]``; labels ``[N]``;
embeddings ``[N, D]``. Every function returns a dict of scalar tensors with ``loss`` and
its parts (for logging).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

# logit scale of the ranking term: centred cosines run ~0.75 (same face) vs ~0 (other people),
# so a scale of 10 leaves well-separated faces near zero loss and puts the gradient on the close ones
RANK_SCALE = 10.0


def ssim_per_image(x: torch.Tensor, x_prot: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair ``[N]`` (pytorch-msssim, 11x11 Gaussian window, data range 1), in fp32."""
    return ssim(x.float(), x_prot.float(), data_range=1.0, size_average=False)


def similarity_term(x: torch.Tensor, x_prot: torch.Tensor, mode: str = "abs") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss term, mean |SSIM|) for ``mode`` "abs" (mean |SSIM|) or "signed" (mean SSIM)."""
    s = ssim_per_image(x, x_prot)
    term = s.abs().mean() if mode == "abs" else s.mean()
    return term, s.abs().mean().detach()


def classification_loss(
    x: torch.Tensor,
    x_prot: torch.Tensor,
    y: torch.Tensor,
    target_logits: torch.Tensor,
    aux_logits: torch.Tensor | None,
    *,
    w_target: float = 1.0,
    w_aux: float = 1.0,
    w_ssim: float = 0.5,
    aux_ce_cap: float | None = 5.0,
    ssim_mode: str = "abs",
) -> dict[str, torch.Tensor]:
    """Eq. 4 of the paper (see module doc); ``aux_logits=None`` is the no-aux baseline."""
    target_ce = F.cross_entropy(target_logits.float(), y)
    sim, abs_ssim = similarity_term(x, x_prot, ssim_mode)
    loss = w_target * target_ce + w_ssim * sim
    out = {"target_ce": target_ce.detach(), "ssim": abs_ssim}
    if aux_logits is not None:
        aux_ce = F.cross_entropy(aux_logits.float(), y, reduction="none")
        capped = aux_ce.clamp(max=aux_ce_cap) if aux_ce_cap is not None else aux_ce
        loss = loss - w_aux * capped.mean()
        out["aux_ce"] = aux_ce.mean().detach()
    out["loss"] = loss
    return out


def face_loss(
    x: torch.Tensor,
    x_prot: torch.Tensor,
    target_clean: torch.Tensor,
    target_prot: torch.Tensor,
    aux_clean: torch.Tensor | None,
    aux_prot: torch.Tensor | None,
    *,
    w_target: float = 1.0,
    w_aux: float = 1.0,
    w_ssim: float = 0.5,
    aux_margin: float = 0.0,
    ssim_mode: str = "abs",
    target_mean: torch.Tensor | None = None,
    w_target_centred: float = 0.0,
    labels: torch.Tensor | None = None,
    w_target_rank: float = 0.0,
    rank_bank: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Identity-preserving (target) / identity-removing (aux) loss on embeddings [N, D];
    ``target_mean [D]`` adds (and logs) the centred target term, and with ``labels [N]`` the
    ranking term, whose negatives ``rank_bank`` (unit clean target embeddings ``[K, D]`` of
    earlier batches and their labels ``[K]``) extends."""
    t_cos = F.cosine_similarity(target_prot.float(), target_clean.float().detach(), dim=1).mean()
    sim, abs_ssim = similarity_term(x, x_prot, ssim_mode)
    loss = w_target * (1.0 - t_cos) + w_ssim * sim
    out = {"target_cos": t_cos.detach(), "ssim": abs_ssim}
    if target_mean is not None:
        mu = target_mean.float().detach()
        prot_c = F.normalize(F.normalize(target_prot.float(), dim=1) - mu, dim=1)
        clean_c = F.normalize(F.normalize(target_clean.float().detach(), dim=1) - mu, dim=1)
        c_cos = (prot_c * clean_c).sum(1).mean()
        loss = loss + w_target_centred * (1.0 - c_cos)
        out["target_centred_cos"] = c_cos.detach()
        if labels is not None:
            bank = bank_labels = None
            if rank_bank is not None:
                bank, bank_labels = F.normalize(rank_bank[0].float().to(mu) - mu, dim=1), rank_bank[1]
            rank_ce, rank_top1 = ranking_term(prot_c, clean_c, labels, bank, bank_labels)
            loss = loss + w_target_rank * rank_ce
            out["target_rank_ce"], out["target_rank_top1"] = rank_ce.detach(), rank_top1
    if aux_prot is not None:
        a_cos = F.cosine_similarity(aux_prot.float(), aux_clean.float().detach(), dim=1)
        loss = loss + w_aux * F.relu(a_cos - aux_margin).mean()
        out["aux_cos"] = a_cos.mean().detach()
    out["loss"] = loss
    return out


def ranking_term(prot: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor,
                 bank: torch.Tensor | None = None,
                 bank_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, top-1) of each protected embedding ``prot [N, D]`` picking its own clean
    one among ``clean [N, D]`` (unit, centred) by cosine; other images of the same identity
    (``labels [N]``) are not counted as negatives. ``bank [K, D]`` (unit, centred, with
    ``bank_labels [K]``) adds negatives from earlier batches, again none of the own identity."""
    candidates, cand_labels = clean, labels
    if bank is not None and len(bank):
        candidates, cand_labels = torch.cat([clean, bank.to(clean)]), torch.cat([labels, bank_labels.to(labels)])
    logits = RANK_SCALE * prot @ candidates.T
    own = torch.eye(len(labels), len(cand_labels), dtype=torch.bool, device=labels.device)  # [N, N + K]
    logits = logits.masked_fill((labels[:, None] == cand_labels[None, :]) & ~own, float("-inf"))
    target = torch.arange(len(labels), device=labels.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean().detach()


def gap_term(prot: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gap, top-1) of the aux recognizer identifying protected faces: the mean over faces of
    ``relu(C[i, i] - mean_j C[i, j])``, ``C`` the cosine of ``prot [N, D]`` to ``clean [N, D]``
    and ``j`` over the batch's other identities (``labels [N]``; a face with none is left out),
    and how often the own clean face is the nearest of them (the gallery search's top-1)."""
    c = F.normalize(prot.float(), dim=1) @ F.normalize(clean.float().detach(), dim=1).T
    others = labels[:, None] != labels[None, :]
    has = others.any(1)
    if not has.any():
        zero = c.new_zeros(())
        return zero, zero.detach()
    own = c.diagonal()
    mean_others = (c * others).sum(1) / others.sum(1).clamp_min(1)
    gap = F.relu(own - mean_others)[has].mean()
    nearest_other = c.masked_fill(~others, float("-inf")).amax(1)
    return gap, (own > nearest_other)[has].float().mean().detach()


def link_term(prot: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(link, top-1) of the aux linking protected faces to each other. ``C`` is the cosine among
    ``prot [N, D]``; each face's softmax over ``RANK_SCALE * C[i, j]``, ``j != i``, puts a share
    ``p_i`` on the batch's other photos of its identity (``labels [N]``); the term is the mean of
    ``relu(p_i - s_i)``, ``s_i`` the share those photos would get if the aux saw no identity (their
    number over N - 1), over faces with both another photo of their own and another identity.
    The softmax, unlike a mean cosine gap, puts the gradient on the nearest faces, which are what
    a gallery search returns. top-1: how often i's nearest other face is of its own identity (the
    linkage attacker's top-1 within the batch)."""
    c = F.normalize(prot.float(), dim=1)
    c = c @ c.T
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    same = (labels[:, None] == labels[None, :]) & ~self_mask
    has = same.any(1) & (labels[:, None] != labels[None, :]).any(1)
    if not has.any():
        zero = c.new_zeros(())
        return zero, zero.detach()
    p = torch.softmax((RANK_SCALE * c).masked_fill(self_mask, float("-inf")), dim=1)
    share = same.sum(1) / (len(labels) - 1)
    link = F.relu((p * same).sum(1) - share)[has].mean()
    nearest = c.masked_fill(self_mask, float("-inf")).argmax(1)
    return link, same.gather(1, nearest[:, None]).squeeze(1)[has].float().mean().detach()
