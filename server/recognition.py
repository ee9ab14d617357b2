"""The recognition data plane: hosted models run on tensors, their outputs become answers.

What every RecognitionService call does once its request is decoded: find the model,
run it (whole, or its second half on split features) through the dynamic batcher, and
turn the outputs into answers: top-k classes of a classifier, gallery matches of an
embedding, verify decisions, enrolments. Types in and out are torch, numpy and the small
dataclasses below, so the gRPC servicer only translates messages.

Inputs arrive as ``decode(model) -> Batch`` callables, called once the model is known:
decoding needs the model's input size or split shapes, and the cheap checks (top_k,
identity, threshold, enrolment) come first, so a request with several faults always
gets the same error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np
import torch

from photoveil import wire
from photoveil.errors import InvalidInput, NotFound
from photoveil.server.batching import DynamicBatcher
from photoveil.server.gallery import GalleryStore, check_identity, match
from photoveil.server.model_host import BatchKey, HostedModel, ModelHost, ModelKind

DEFAULT_TOP_K, MAX_TOP_K = 5, 1000


@dataclass(frozen=True)
class Batch:
    """Decoded input: ``items`` [N, ...] entering the model at ``stage`` (FULL or a split point)."""

    stage: str
    items: torch.Tensor


Decode = Callable[[HostedModel], Batch]


@dataclass(frozen=True)
class Candidate:
    label: str
    score: float    # softmax probability (classes) or cosine similarity (identities)
    index: int      # class index; -1 for a gallery identity


@dataclass(frozen=True)
class Result:
    """The answer for one input item."""

    candidates: list[Candidate]
    output: torch.Tensor    # the model's output row: logits or the L2-normalised embedding


@dataclass(frozen=True)
class Recognition:
    model: HostedModel
    results: list[Result]


@dataclass(frozen=True)
class Verdict:
    match: bool
    score: float        # best similarity to the identity's enrolled embeddings
    threshold: float


@dataclass(frozen=True)
class Verification:
    model: HostedModel
    verdicts: list[Verdict]


@dataclass(frozen=True)
class Enrolment:
    model: HostedModel
    identity: str
    record_ids: list[int]
    total_for_identity: int


def top_k_of(k: int) -> int:
    """The number of candidates to return for a requested ``k`` (0: the default)."""
    if k > MAX_TOP_K:
        raise InvalidInput(f"top_k {k} is over the maximum of {MAX_TOP_K} (0 means {DEFAULT_TOP_K})")
    return k or DEFAULT_TOP_K


def feature_batch(model: HostedModel, point: str, x: torch.Tensor) -> torch.Tensor:
    """Split features, one item or ``[N, ...]``, checked against ``point``'s shape -> float ``[N, ...]``."""
    model.split(point)  # NOT_FOUND for an unknown split point
    expected = model.feature_shapes[point]
    if tuple(x.shape) == expected:
        x = x.unsqueeze(0)
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
        raise InvalidInput(f"features of shape {list(x.shape)} do not fit split point {point!r} of "
                           f"{model.model_id!r}: expected [N, {', '.join(map(str, expected))}]")
    return wire.require_finite(x, "features").float()


class RecognitionPlane:
    """Models, batcher and gallery behind the recognition calls; thread-safe."""

    def __init__(self, host: ModelHost, gallery: GalleryStore, batcher: DynamicBatcher[BatchKey] | None,
                 max_batch_items: int):
        self.host, self.gallery, self.batcher, self.max_batch_items = host, gallery, batcher, max_batch_items

    # -- models -----------------------------------------------------------------------

    def models(self) -> list[HostedModel]:
        return self.host.models()

    def embedding_model(self, model_id: str) -> HostedModel:
        model = self.host.get(model_id)
        if model.kind is not ModelKind.EMBEDDING:
            embedding = [m.model_id for m in self.host.models() if m.kind is ModelKind.EMBEDDING]
            raise InvalidInput(f"model {model_id!r} is a classification model; the gallery needs an embedding "
                               f"model: {', '.join(embedding) or 'none hosted'}")
        return model

    def run(self, model: HostedModel, batch: Batch, tag: Hashable = None) -> torch.Tensor:
        """The model's output rows for ``batch``; waits for its place in a batched forward pass
        (``tag``: the call it belongs to, for the batcher's round-robin)."""
        n = batch.items.shape[0]
        if n > self.max_batch_items:
            raise wire.TooLarge(f"{n} items in one request; the limit is {self.max_batch_items}")
        key = BatchKey(model.model_id, batch.stage, tuple(batch.items.shape[1:]))
        if self.batcher is None:  # batching off: run in the caller's thread
            return self.host.run(key, batch.items)
        return self.batcher.submit(key, batch.items, tag).result()

    # -- calls ------------------------------------------------------------------------

    def recognize(self, model_id: str, top_k: int, decode: Decode, tag: Hashable = None) -> Recognition:
        """Top-k classes (classification) or gallery identities (embedding) per item."""
        k = top_k_of(top_k)
        model = self.host.get(model_id)
        return Recognition(model, self._answers(model, self.run(model, decode(model), tag), k))

    def identify(self, model_id: str, top_k: int, decode: Decode) -> Recognition:
        """Top-k gallery identities per item; embedding models only."""
        k = top_k_of(top_k)
        model = self.embedding_model(model_id)
        return Recognition(model, self._answers(model, self.run(model, decode(model)), k))

    def enroll(self, model_id: str, identity: str, decode: Decode) -> Enrolment:
        """Store each item's embedding under ``identity``."""
        model = self.embedding_model(model_id)
        check_identity(identity)
        out = self.run(model, decode(model))
        ids = self.gallery.add(model.model_id, model.version, identity, out.numpy())
        return Enrolment(model, identity, ids, self.gallery.count(model.model_id, identity))

    def verify(self, model_id: str, identity: str, threshold: float, decode: Decode) -> Verification:
        """Per item: is it ``identity``? Best similarity to its enrolments against ``threshold`` (0: the model's)."""
        model = self.embedding_model(model_id)
        check_identity(identity)
        threshold = threshold or model.verify_threshold
        if not -1.0 < threshold <= 1.0 or threshold != threshold:
            raise InvalidInput(f"threshold {threshold} must be in (-1, 1] (0 means the model's "
                               f"{model.verify_threshold})")
        if self.gallery.count(model.model_id, identity) == 0:
            raise NotFound(f"identity {identity!r} is not enrolled under model {model.model_id!r}")
        out = self.run(model, decode(model))
        view = self.gallery.view(model.model_id, out.shape[1])
        mask = np.array([name == identity for name in view.identities])
        sims = np.clip(out.numpy() @ view.vectors[mask].T, -1.0, 1.0)
        best = sims.max(axis=1)
        return Verification(model, [Verdict(match=bool(s >= threshold), score=float(s), threshold=threshold)
                                    for s in best])

    def delete(self, model_id: str, identity: str) -> int:
        """Remove an identity's enrolments under a model; how many were removed (NOT_FOUND for none)."""
        model = self.embedding_model(model_id)
        deleted = self.gallery.delete(model.model_id, identity)
        if deleted == 0:
            raise NotFound(f"identity {identity!r} is not enrolled under model {model.model_id!r}")
        return deleted

    # -- outputs -> answers -----------------------------------------------------------

    def _answers(self, model: HostedModel, out: torch.Tensor, k: int) -> list[Result]:
        if model.kind is ModelKind.CLASSIFICATION:
            probs = torch.softmax(out, dim=1)
            scores, idx = probs.topk(min(k, probs.shape[1]), dim=1)
            rows = [[Candidate(model.label(i), s, i) for s, i in zip(s_row, i_row)]
                    for s_row, i_row in zip(scores.tolist(), idx.tolist())]
        else:
            view = self.gallery.view(model.model_id, out.shape[1])
            rows = [[Candidate(name, score, -1) for name, score in row] for row in match(view, out.numpy(), k)]
        return [Result(candidates, output) for candidates, output in zip(rows, out)]
