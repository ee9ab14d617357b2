"""RecognitionService and ArtifactService implementations.

Handlers raise :mod:`photoveil.errors` exceptions; the error interceptor (and, per
stream item, :func:`~photoveil.server.status.status_for`) turns them into statuses.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from photoveil import wire
from photoveil.errors import InvalidInput, NotFound
from photoveil.server.artifacts import MANIFEST_ROLE, PROGRAM, SIGNATURE, ArtifactStore
from photoveil.server.batching import DynamicBatcher
from photoveil.server.config import LimitsConfig
from photoveil.server.gallery import GalleryStore, check_identity, match
from photoveil.server.model_host import FULL, HostedModel, ModelHost, ModelKind
from photoveil.server.status import status_for
from photoveil.v1 import artifacts_pb2, artifacts_pb2_grpc, recognition_pb2 as pb, recognition_pb2_grpc, tensor_pb2

log = logging.getLogger("photoveil.server")
DEFAULT_TOP_K, MAX_TOP_K = 5, 1000
STREAM_WINDOW = 64  # stream items in flight per RecognizeStream call
FEATURE_DATATYPES = ("FP32", "FP16", "BF16", "FP64")


def _top_k(k: int) -> int:
    if k > MAX_TOP_K:
        raise InvalidInput(f"top_k {k} is over the maximum of {MAX_TOP_K} (0 means {DEFAULT_TOP_K})")
    return k or DEFAULT_TOP_K


class RecognitionServicer(recognition_pb2_grpc.RecognitionServiceServicer):
    def __init__(self, host: ModelHost, gallery: GalleryStore, batcher: DynamicBatcher | None,
                 limits: LimitsConfig):
        self.host, self.gallery, self.batcher, self.limits = host, gallery, batcher, limits
        # Stream items wait on the batcher here, so a stream's items batch with each other.
        self._stream_pool = ThreadPoolExecutor(max_workers=STREAM_WINDOW, thread_name_prefix="stream-item")

    def close(self) -> None:
        self._stream_pool.shutdown(wait=True, cancel_futures=False)

    # -- inputs -> model outputs ----------------------------------------------------

    def _tensor(self, msg: tensor_pb2.Tensor) -> torch.Tensor:
        return wire.proto_to_torch(msg, max_bytes=self.limits.max_message_bytes)

    def _check_items(self, n: int) -> None:
        if n > self.limits.max_batch_items:
            raise wire.TooLarge(f"{n} items in one request; the limit is {self.limits.max_batch_items}")

    def _features(self, model: HostedModel, point: str, msg: tensor_pb2.Tensor) -> torch.Tensor:
        model.split(point)  # NOT_FOUND for an unknown split point
        if msg.datatype not in FEATURE_DATATYPES:
            raise InvalidInput(f"features datatype {msg.datatype!r} is not accepted; send one of "
                               f"{', '.join(FEATURE_DATATYPES)}")
        x = self._tensor(msg)
        expected = model.feature_shapes[point]
        if tuple(x.shape) == expected:
            x = x.unsqueeze(0)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
            raise InvalidInput(f"features of shape {list(x.shape)} do not fit split point {point!r} of "
                               f"{model.model_id!r}: expected [N, {', '.join(map(str, expected))}]")
        return wire.require_finite(x, "features").float()

    def _prepare(self, model: HostedModel, inp: pb.Input | None) -> tuple[str, torch.Tensor]:
        """(stage, batch) for an Input message."""
        kind = inp.WhichOneof("kind") if inp is not None else None
        if kind == "encoded_image":
            image = wire.decode_image(inp.encoded_image, max_pixels=self.limits.max_image_pixels,
                                      max_bytes=self.limits.max_message_bytes)
            return FULL, wire.resize(image.unsqueeze(0), model.input_size)
        if kind == "tensor":
            return FULL, wire.image_batch(self._tensor(inp.tensor), size=model.input_size)
        if kind == "features":
            return inp.features.split_point, self._features(model, inp.features.split_point, inp.features.tensor)
        raise InvalidInput("input is empty; set one of encoded_image (JPEG/PNG), tensor or features")

    def _submit(self, model: HostedModel, stage: str, batch: torch.Tensor) -> Future:
        self._check_items(batch.shape[0])
        key = (model.model_id, stage, tuple(batch.shape[1:]))
        if self.batcher is None:  # batching off: run in the handler thread
            future: Future = Future()
            try:
                future.set_result(self.host.run(key, batch))
            except Exception as exc:  # noqa: BLE001 - re-raised by result()
                future.set_exception(exc)
            return future
        return self.batcher.submit(key, batch)

    def _outputs(self, model: HostedModel, inp: pb.Input | None) -> torch.Tensor:
        stage, batch = self._prepare(model, inp)
        return self._submit(model, stage, batch).result()

    # -- outputs -> answers -----------------------------------------------------------

    def _results(self, model: HostedModel, out: torch.Tensor, top_k: int, return_output: bool) -> list[pb.Result]:
        results = []
        if model.kind is ModelKind.CLASSIFICATION:
            probs = torch.softmax(out, dim=1)
            scores, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
            for s_row, i_row in zip(scores.tolist(), idx.tolist()):
                results.append(pb.Result(candidates=[pb.Candidate(label=model.label(i), score=s, index=i)
                                                     for s, i in zip(s_row, i_row)]))
        else:
            view = self.gallery.view(model.model_id, out.shape[1])
            for row in match(view, out.numpy(), top_k):
                results.append(pb.Result(candidates=[pb.Candidate(label=n, score=s, index=-1) for n, s in row]))
        if return_output:
            for result, row in zip(results, out):
                result.output.CopyFrom(wire.torch_to_proto(row, "output"))
        return results

    def _embedding_model(self, model_id: str) -> HostedModel:
        model = self.host.get(model_id)
        if model.kind is not ModelKind.EMBEDDING:
            embedding = [m.model_id for m in self.host.models() if m.kind is ModelKind.EMBEDDING]
            raise InvalidInput(f"model {model_id!r} is a classification model; the gallery needs an embedding "
                               f"model: {', '.join(embedding) or 'none hosted'}")
        return model

    # -- RPCs ---------------------------------------------------------------------------

    def ListModels(self, request, context):
        infos = []
        for m in self.host.models():
            infos.append(pb.ModelInfo(
                model_id=m.model_id, version=m.version, input_height=m.input_size[0], input_width=m.input_size[1],
                kind=pb.MODEL_KIND_EMBEDDING if m.kind is ModelKind.EMBEDDING else pb.MODEL_KIND_CLASSIFICATION,
                split_points={p: pb.Shape(dims=list(s)) for p, s in m.feature_shapes.items()},
                labels=m.labels, verify_threshold=m.verify_threshold))
        return pb.ListModelsResponse(models=infos)

    def _recognize(self, request: pb.RecognizeRequest) -> pb.RecognizeResponse:
        top_k = _top_k(request.top_k)
        model = self.host.get(request.model_id)
        out = self._outputs(model, request.input if request.HasField("input") else None)
        return pb.RecognizeResponse(model_id=model.model_id, model_version=model.version,
                                    request_id=request.request_id,
                                    results=self._results(model, out, top_k, request.return_output))

    def Recognize(self, request, context):
        return self._recognize(request)

    def RecognizeFeatures(self, request, context):
        top_k = _top_k(request.top_k)
        model = self.host.get(request.model_id)
        if not request.HasField("features"):
            raise InvalidInput("features are missing; send the shallow features tensor of the split point")
        batch = self._features(model, request.split_point, request.features)
        out = self._submit(model, request.split_point, batch).result()
        return pb.RecognizeResponse(model_id=model.model_id, model_version=model.version,
                                    request_id=request.request_id,
                                    results=self._results(model, out, top_k, request.return_output))

    def RecognizeStream(self, request_iterator, context):
        """Items are submitted as they arrive (so they batch with each other) and answered in order."""
        pending: queue.Queue = queue.Queue(maxsize=STREAM_WINDOW)
        done = object()

        def finish(request: pb.RecognizeRequest) -> pb.RecognizeResponse:
            try:
                return self._recognize(request)
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the stream
                code, message = status_for(exc, "/photoveil.v1.RecognitionService/RecognizeStream")
                return pb.RecognizeResponse(model_id=request.model_id, request_id=request.request_id,
                                            error=tensor_pb2.ItemError(code=code.value[0], message=message))

        def read():
            try:
                for request in request_iterator:
                    # Validation and batching run in the pool; the bounded queue is the window.
                    pending.put(self._stream_pool.submit(finish, request))
            except Exception as exc:  # noqa: BLE001 - client went away: stop reading
                log.debug("RecognizeStream reader stopped: %s", exc)
            finally:
                pending.put(done)

        threading.Thread(target=read, name="recognize-stream-reader", daemon=True).start()
        while True:
            item = pending.get()
            if item is done:
                return
            yield item.result()

    def Enroll(self, request, context):
        model = self._embedding_model(request.model_id)
        check_identity(request.identity)
        out = self._outputs(model, request.input if request.HasField("input") else None)
        ids = self.gallery.add(model.model_id, model.version, request.identity, out.numpy())
        return pb.EnrollResponse(model_id=model.model_id, model_version=model.version, identity=request.identity,
                                 record_ids=ids, total_for_identity=self.gallery.count(model.model_id, request.identity))

    def Verify(self, request, context):
        model = self._embedding_model(request.model_id)
        check_identity(request.identity)
        threshold = request.threshold or model.verify_threshold
        if not -1.0 < threshold <= 1.0 or threshold != threshold:
            raise InvalidInput(f"threshold {threshold} must be in (-1, 1] (0 means the model's "
                               f"{model.verify_threshold})")
        if self.gallery.count(model.model_id, request.identity) == 0:
            raise NotFound(f"identity {request.identity!r} is not enrolled under model {model.model_id!r}")
        out = self._outputs(model, request.input if request.HasField("input") else None)
        view = self.gallery.view(model.model_id, out.shape[1])
        mask = np.array([name == request.identity for name in view.identities])
        sims = np.clip(out.numpy() @ view.vectors[mask].T, -1.0, 1.0)
        best = sims.max(axis=1)
        return pb.VerifyResponse(model_id=model.model_id, model_version=model.version,
                                 verdicts=[pb.Verdict(match=bool(s >= threshold), score=float(s), threshold=threshold)
                                           for s in best])

    def Identify(self, request, context):
        top_k = _top_k(request.top_k)
        model = self._embedding_model(request.model_id)
        out = self._outputs(model, request.input if request.HasField("input") else None)
        return pb.IdentifyResponse(model_id=model.model_id, model_version=model.version,
                                   results=self._results(model, out, top_k, False))

    def DeleteIdentity(self, request, context):
        model = self._embedding_model(request.model_id)
        deleted = self.gallery.delete(model.model_id, request.identity)
        if deleted == 0:
            raise NotFound(f"identity {request.identity!r} is not enrolled under model {model.model_id!r}")
        return pb.DeleteIdentityResponse(deleted=deleted)


_ROLES = {PROGRAM: artifacts_pb2.FILE_ROLE_PROGRAM, MANIFEST_ROLE: artifacts_pb2.FILE_ROLE_MANIFEST,
          SIGNATURE: artifacts_pb2.FILE_ROLE_SIGNATURE}


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, store: ArtifactStore | None):
        self.store = store

    @staticmethod
    def _info(artifact) -> artifacts_pb2.ArtifactInfo:
        m = artifact.manifest
        return artifacts_pb2.ArtifactInfo(
            artifact_id=artifact.artifact_id, model_id=str(m.get("model_id", "")), version=str(m.get("version", "")),
            method=str(m.get("method", "")), manifest_json=artifact.manifest_json, signed=artifact.signed,
            files=[artifacts_pb2.ArtifactFile(name=f.name, role=_ROLES[f.role], size=f.size, sha256=f.sha256)
                   for f in artifact.files])

    def ListArtifacts(self, request, context):
        artifacts = self.store.list(request.model_id) if self.store else []
        return artifacts_pb2.ListArtifactsResponse(artifacts=[self._info(a) for a in artifacts])

    def GetArtifact(self, request, context):
        if self.store is None:
            raise NotFound(f"unknown artifact {request.artifact_id[:80]!r}; this server publishes none")
        artifact = self.store.get(request.artifact_id)
        chunks = ArtifactStore.chunks(artifact, request.chunk_size)  # validates chunk_size lazily
        first = next(chunks)  # raise a bad chunk_size before anything is sent
        yield artifacts_pb2.ArtifactChunk(info=self._info(artifact))
        for f, offset, data, last in itertools.chain([first], chunks):
            yield artifacts_pb2.ArtifactChunk(chunk=artifacts_pb2.FileChunk(
                name=f.name, role=_ROLES[f.role], offset=offset, data=data, last=last))
