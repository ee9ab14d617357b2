"""The gRPC services: request messages -> :mod:`.recognition` / :mod:`.artifacts` calls -> responses.

Only message translation lives here (decoding tensors and images within the configured
limits, building responses); the recognition logic is :class:`RecognitionPlane`.
Handlers raise :mod:`photoveil.errors` exceptions; the error interceptor (and, per
stream item, :func:`~photoveil.server.status.status_for`) turns them into statuses.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

import torch

from photoveil import wire
from photoveil.errors import InvalidInput, NotFound, PhotoveilError
from photoveil.server.artifact_versions import check_upload, key_statements
from photoveil.server.artifacts import MANIFEST_ROLE, PROGRAM, SIGNATURE, ArtifactStore
from photoveil.server.batching import FairExecutor
from photoveil.server.config import LimitsConfig
from photoveil.server.model_host import FULL, HostedModel, ModelKind
from photoveil.server.recognition import Batch, Decode, Recognition, RecognitionPlane, Result, feature_batch
from photoveil.server.status import Overloaded, status_for
from photoveil.v1 import artifacts_pb2, artifacts_pb2_grpc, recognition_pb2 as pb, recognition_pb2_grpc, tensor_pb2

log = logging.getLogger("photoveil.server")
STREAM_WINDOW = 64  # stream items in flight per RecognizeStream call
POLL_S = 0.1        # how often a stream's threads look whether their call has ended
DECODE_WAIT_S = 10.0  # longest wait for a decode slot before RESOURCE_EXHAUSTED
FEATURE_DATATYPES = ("FP32", "FP16", "BF16", "FP64")


class RecognitionServicer(recognition_pb2_grpc.RecognitionServiceServicer):
    def __init__(self, plane: RecognitionPlane, limits: LimitsConfig, artifacts: ArtifactStore | None = None):
        self.plane, self.limits = plane, limits
        self.artifacts = artifacts  # judges the artifact version an upload names (artifact_versions)
        # Stream items wait on the batcher here, so a stream's items batch with each other;
        # round-robin over calls, so a small stream is not queued behind a large one's window.
        self._stream_pool = FairExecutor(STREAM_WINDOW, name="stream-item")
        # Decoding holds a full-size 8-bit image: this caps how many exist at once.
        self._decodes = threading.BoundedSemaphore(limits.max_concurrent_decodes)

    def close(self) -> None:
        """Stop the stream pool: items not started are cancelled, running ones finish (the batcher is closed)."""
        self._stream_pool.shutdown()

    # -- request messages -> domain ---------------------------------------------------

    def _tensor(self, msg: tensor_pb2.Tensor) -> torch.Tensor:
        return wire.proto_to_torch(msg, max_bytes=self.limits.max_message_bytes)

    def _features(self, model: HostedModel, point: str, msg: tensor_pb2.Tensor) -> Batch:
        model.split(point)  # an unknown split point is NOT_FOUND before the payload is looked at
        if msg.datatype not in FEATURE_DATATYPES:
            raise InvalidInput(f"features datatype {msg.datatype!r} is not accepted; send one of "
                               f"{', '.join(FEATURE_DATATYPES)}")
        return Batch(point, feature_batch(model, point, self._tensor(msg)))

    def _input(self, inp: pb.Input | None, model: HostedModel) -> Batch:
        kind = inp.WhichOneof("kind") if inp is not None else None
        if kind == "encoded_image":
            return Batch(FULL, self._decode_image(inp.encoded_image, model.input_size).unsqueeze(0))
        if kind == "tensor":
            return Batch(FULL, wire.image_batch(self._tensor(inp.tensor), size=model.input_size))
        if kind == "features":
            return self._features(model, inp.features.split_point, inp.features.tensor)
        raise InvalidInput("input is empty; set one of encoded_image (JPEG/PNG), tensor or features")

    def _decode_image(self, data: bytes, size: tuple[int, int]) -> torch.Tensor:
        if not self._decodes.acquire(timeout=DECODE_WAIT_S):
            raise Overloaded(f"all {self.limits.max_concurrent_decodes} image decode slots stayed busy for "
                             f"{DECODE_WAIT_S:g} s; retry later with backoff")
        try:
            return wire.decode_image(data, max_pixels=self.limits.max_image_pixels,
                                     max_bytes=self.limits.max_message_bytes, size=size)
        finally:
            self._decodes.release()

    def _decoder(self, request) -> Decode:
        """The plane's ``decode(model)`` for a request with an ``input`` field."""
        return partial(self._input, request.input if request.HasField("input") else None)

    # -- domain -> response messages --------------------------------------------------

    @staticmethod
    def _results(results: list[Result], return_output: bool) -> list[pb.Result]:
        messages = []
        for result in results:
            msg = pb.Result(candidates=[pb.Candidate(label=c.label, score=c.score, index=c.index)
                                        for c in result.candidates])
            if return_output:
                msg.output.CopyFrom(wire.torch_to_proto(result.output, "output"))
            messages.append(msg)
        return messages

    @classmethod
    def _recognized(cls, request, answer: Recognition) -> pb.RecognizeResponse:
        return pb.RecognizeResponse(model_id=answer.model.model_id, model_version=answer.model.version,
                                    request_id=request.request_id,
                                    results=cls._results(answer.results, request.return_output))

    # -- RPCs ---------------------------------------------------------------------------

    def ListModels(self, request, context):
        infos = []
        for m in self.plane.models():
            infos.append(pb.ModelInfo(
                model_id=m.model_id, version=m.version, input_height=m.input_size[0], input_width=m.input_size[1],
                kind=pb.MODEL_KIND_EMBEDDING if m.kind is ModelKind.EMBEDDING else pb.MODEL_KIND_CLASSIFICATION,
                split_points={p: pb.Shape(dims=list(s)) for p, s in m.feature_shapes.items()},
                labels=m.labels, verify_threshold=m.verify_threshold))
        return pb.ListModelsResponse(models=infos)

    def _check_artifact(self, request, context=None) -> None:
        check_upload(self.artifacts, lambda model_id: self.plane.host.get(model_id).version, request, context)

    def _recognize(self, request: pb.RecognizeRequest, tag: object = None, context=None) -> pb.RecognizeResponse:
        self._check_artifact(request, context)
        return self._recognized(request, self.plane.recognize(request.model_id, request.top_k,
                                                              self._decoder(request), tag))

    def Recognize(self, request, context):
        return self._recognize(request, context=context)

    def RecognizeFeatures(self, request, context):
        self._check_artifact(request, context)

        def decode(model: HostedModel) -> Batch:
            if not request.HasField("features"):
                raise InvalidInput("features are missing; send the shallow features tensor of the split point")
            return self._features(model, request.split_point, request.features)

        return self._recognized(request, self.plane.recognize(request.model_id, request.top_k, decode))

    def RecognizeStream(self, request_iterator, context):
        """Items are submitted as they arrive (so they batch with each other) and answered in order.

        A reader thread feeds the bounded window; both it and this generator stop once the
        call has ended (finished, cancelled, past its deadline, aborted, server stopping):
        no wait here is unbounded, so nothing outlives its call.
        """
        pending: queue.Queue = queue.Queue(maxsize=STREAM_WINDOW)
        ended = threading.Event()
        context.add_callback(ended.set)
        done, failure = object(), []
        tag = ("stream", id(ended))  # this call, for the fair pool and the batcher

        def finish(request: pb.RecognizeRequest) -> pb.RecognizeResponse:
            try:
                return self._recognize(request, tag)
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the stream
                code, message = status_for(exc, "/photoveil.v1.RecognitionService/RecognizeStream")
                return pb.RecognizeResponse(model_id=request.model_id, request_id=request.request_id,
                                            error=tensor_pb2.ItemError(code=code.value[0], message=message))

        def offer(item) -> bool:
            while not ended.is_set():
                try:
                    pending.put(item, timeout=POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def read():
            try:
                for request in request_iterator:
                    # Validation and batching run in the pool; the bounded queue is the window.
                    future = self._stream_pool.submit(tag, finish, request)
                    if not offer(future):
                        future.cancel()
                        return
            except PhotoveilError as exc:  # rate limit, undecodable item: the call ends with its status
                failure.append(exc)
            except Exception as exc:  # noqa: BLE001 - client went away / call ended: stop reading
                log.debug("RecognizeStream reader stopped: %s", exc)
            finally:
                offer(done)

        threading.Thread(target=read, name="recognize-stream-reader", daemon=True).start()
        try:
            while True:
                try:
                    item = pending.get(timeout=POLL_S)
                except queue.Empty:
                    if ended.is_set():
                        return
                    continue
                if item is done:
                    if failure:
                        raise failure[0]
                    return
                while not ended.is_set():
                    try:
                        answer = item.result(timeout=POLL_S)
                        break
                    except FutureTimeout:
                        continue
                else:
                    return
                yield answer
        finally:
            ended.set()  # the reader stops; what it queued is dropped
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
                if item is not done:
                    item.cancel()

    def Enroll(self, request, context):
        self._check_artifact(request, context)
        e = self.plane.enroll(request.model_id, request.identity, self._decoder(request))
        return pb.EnrollResponse(model_id=e.model.model_id, model_version=e.model.version, identity=e.identity,
                                 record_ids=e.record_ids, total_for_identity=e.total_for_identity)

    def Verify(self, request, context):
        self._check_artifact(request, context)
        v = self.plane.verify(request.model_id, request.identity, request.threshold, self._decoder(request))
        return pb.VerifyResponse(model_id=v.model.model_id, model_version=v.model.version,
                                 verdicts=[pb.Verdict(match=d.match, score=d.score, threshold=d.threshold)
                                           for d in v.verdicts])

    def Identify(self, request, context):
        self._check_artifact(request, context)
        answer = self.plane.identify(request.model_id, request.top_k, self._decoder(request))
        return pb.IdentifyResponse(model_id=answer.model.model_id, model_version=answer.model.version,
                                   results=self._results(answer.results, False))

    def DeleteIdentity(self, request, context):
        return pb.DeleteIdentityResponse(deleted=self.plane.delete(request.model_id, request.identity))


_ROLES = {PROGRAM: artifacts_pb2.FILE_ROLE_PROGRAM, MANIFEST_ROLE: artifacts_pb2.FILE_ROLE_MANIFEST,
          SIGNATURE: artifacts_pb2.FILE_ROLE_SIGNATURE}


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, store: ArtifactStore | None):
        self.store = store

    @staticmethod
    def _info(artifact) -> artifacts_pb2.ArtifactInfo:
        m = artifact.manifest
        return artifacts_pb2.ArtifactInfo(
            artifact_id=artifact.artifact_id, model_id=str(m.model_id), version=str(m.version),
            method=str(m.kind), manifest_json=artifact.manifest_json, signed=artifact.signed,
            current=getattr(artifact, "current", True), compatible_model_version=str(m.compatible_model_version),
            files=[artifacts_pb2.ArtifactFile(name=f.name, role=_ROLES[f.role], size=f.size, sha256=f.sha256)
                   for f in artifact.files])

    def ListArtifacts(self, request, context):
        artifacts = self.store.list(request.model_id) if self.store else []
        return artifacts_pb2.ListArtifactsResponse(artifacts=[self._info(a) for a in artifacts],
                                                   generation=getattr(self.store, "generation", 0))

    def GetArtifact(self, request, context):
        if self.store is None:
            raise NotFound(f"unknown artifact {request.artifact_id[:80]!r}; this server publishes none")
        artifact = self.store.get(request.artifact_id, request.version)
        chunks = self.store.chunks(artifact, request.chunk_size)  # validates chunk_size lazily
        first = next(chunks)  # raise a bad chunk_size before anything is sent
        yield artifacts_pb2.ArtifactChunk(info=self._info(artifact))
        for f, offset, data, last in itertools.chain([first], chunks):
            yield artifacts_pb2.ArtifactChunk(chunk=artifacts_pb2.FileChunk(
                name=f.name, role=_ROLES[f.role], offset=offset, data=data, last=last))

    def GetKeySet(self, request, context):
        return artifacts_pb2.GetKeySetResponse(statements=[
            artifacts_pb2.KeyStatement(sequence=seq, keys_json=keys, signature=sig)
            for seq, keys, sig in key_statements(self.store, request.since_sequence)])
