"""Typed gRPC client of the provider's server: recognition, gallery and artifacts.

Every call has a deadline; calls that fail with ``UNAVAILABLE`` (server restarting,
connection refused, a shed request) are retried with exponential backoff and jitter up
to ``retries`` times. Other statuses are raised at once as :class:`RpcFailed`, which
keeps the gRPC code and the server's message.

Several replicas: give ``target`` as a list (or comma list) of ``IP:PORT`` addresses.
The channel then balances with gRPC's own ``round_robin`` policy over all of them, watches
each one's ``grpc.health.v1`` status (a replica that is shutting down or unreachable gets
no new calls) and, through the service config's ``retryPolicy``, retries a call that
failed with ``UNAVAILABLE`` on another replica inside the same call; the backoff loop
above comes on top for longer outages. A single ``HOST:PORT`` (a DNS name may resolve to
several replicas) gets the same service config.

Example::

    >>> with RecognitionClient("127.0.0.1:50051", token=os.environ["PHOTOVEIL_TOKEN"]) as c:
    ...     answer = c.identify("faceapi-resnet34", image_png_bytes)
    ...     answer.results[0].candidates[0].label
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np

from photoveil import wire
from photoveil.artifact import Manifest
from photoveil.errors import IntegrityError, InvalidInput, PhotoveilError
from photoveil.v1 import artifacts_pb2 as apb, artifacts_pb2_grpc, recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1 import tensor_pb2

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
ROLE_NAMES = {apb.FILE_ROLE_PROGRAM: "program", apb.FILE_ROLE_MANIFEST: "manifest",
              apb.FILE_ROLE_SIGNATURE: "signature"}


class RpcFailed(PhotoveilError):
    """A call the server answered with a non-OK status (after retries, for UNAVAILABLE)."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str, trailers: dict[str, str] | None = None):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details
        self.trailers = trailers or {}  # the server's trailing metadata (e.g. photoveil-current-version)


@dataclass
class RetryPolicy:
    retries: int = 4            # extra attempts after the first, for UNAVAILABLE only
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self):
        if not 0 <= self.retries <= 20:
            raise InvalidInput(f"retries must be in 0..20, got {self.retries}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise InvalidInput("need 0 < initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise InvalidInput(f"multiplier must be >= 1, got {self.multiplier}")

    def delays(self):
        delay = self.initial_backoff_s
        for _ in range(self.retries):
            yield random.uniform(0.5, 1.0) * delay  # jitter: clients that failed together do not retry together
            delay = min(delay * self.multiplier, self.max_backoff_s)


BALANCED_SERVICES = ("photoveil.v1.RecognitionService", "photoveil.v1.ArtifactService")
GRPC_MAX_ATTEMPTS = 5  # gRPC caps retryPolicy.maxAttempts at 5


def channel_target(target: str | list[str] | tuple[str, ...]) -> str:
    """One gRPC target for one or several replica addresses (``IP:PORT``; IPv6 as ``[::1]:PORT``)."""
    addresses = [a.strip() for a in (target.split(",") if isinstance(target, str) else target) if a.strip()]
    if not addresses:
        raise InvalidInput("target: give HOST:PORT, or several IP:PORT replica addresses")
    if len(addresses) == 1:
        return addresses[0]
    families = set()
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(port)
        except ValueError:
            raise InvalidInput(f"replica address {address!r} must be IP:PORT (several replicas are balanced over "
                               "literal addresses; put a DNS name with several records in a single target)") from None
        families.add(ip.version)
    if len(families) > 1:
        raise InvalidInput(f"replica addresses {addresses} mix IPv4 and IPv6; use one family")
    return f"ipv{families.pop()}:" + ",".join(addresses)


def service_config(retry: "RetryPolicy") -> str:
    """round_robin over every address, client-side health checks, transparent retries of UNAVAILABLE."""
    policy = {"maxAttempts": min(GRPC_MAX_ATTEMPTS, retry.retries + 1),
              "initialBackoff": f"{retry.initial_backoff_s}s", "maxBackoff": f"{retry.max_backoff_s}s",
              "backoffMultiplier": retry.multiplier, "retryableStatusCodes": ["UNAVAILABLE"]}
    config = {"loadBalancingConfig": [{"round_robin": {}}],
              "healthCheckConfig": {"serviceName": ""},
              "methodConfig": [{"name": [{"service": s} for s in BALANCED_SERVICES],
                                **({"retryPolicy": policy} if policy["maxAttempts"] > 1 else {})}]}
    return json.dumps(config)


def _input(data: Any, split_point: str = "") -> tensor_pb2.Input:
    """bytes -> encoded image; a torch tensor / numpy array -> tensor, or features if
    ``split_point`` is set."""
    if isinstance(data, tensor_pb2.Input):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        if split_point:
            raise InvalidInput("features must be a tensor, not encoded bytes")
        return tensor_pb2.Input(encoded_image=bytes(data))
    if isinstance(data, np.ndarray):
        tensor = wire.to_proto(wire.encode_numpy(data, "input"))
    elif hasattr(data, "detach"):
        tensor = wire.torch_to_proto(data, "input")
    else:
        raise InvalidInput(f"input must be encoded JPEG/PNG bytes, a torch tensor or a numpy array, "
                           f"got {type(data).__name__}")
    if split_point:
        return tensor_pb2.Input(features=tensor_pb2.Features(split_point=split_point, tensor=tensor))
    return tensor_pb2.Input(tensor=tensor)


def _ref(artifact: tuple[str, str] | None) -> apb.ArtifactRef | None:
    """``(artifact_id, version)`` of the artifact that produced an upload -> its wire reference."""
    return apb.ArtifactRef(artifact_id=artifact[0], version=artifact[1]) if artifact else None


def check_file_name(name: str, artifact_id: str) -> str:
    """A file name a server sends must be one plain name inside the artifact folder."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name) or len(name) > 255):
        raise IntegrityError(f"artifact {artifact_id!r}: the server named a file {name[:80]!r}; an artifact file "
                             "is one plain name (no '', '.', '..', separators or absolute paths); nothing was "
                             "installed")
    return name


class RecognitionClient:
    """Recognition, gallery and artifact calls over one channel.

    Args:
        target: ``HOST:PORT``, or several replicas' ``IP:PORT`` (a list or a comma list).
        token: bearer token sent as ``authorization: Bearer ...`` (the server's auth).
        root_certificates: PEM bytes of the CA that signed the server's certificate; set
            to use TLS. Without it the channel is plaintext (loopback / tests).
        timeout_s: deadline of each attempt.
        retry: backoff policy for ``UNAVAILABLE``.
        max_message_bytes: the channel's send/receive limit.
    """

    def __init__(self, target: str | list[str], token: str | None = None, root_certificates: bytes | None = None,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 max_message_bytes: int = 16 << 20, server_name: str | None = None):
        if timeout_s <= 0:
            raise InvalidInput(f"timeout_s must be > 0, got {timeout_s}")
        retry = retry or RetryPolicy()
        target = channel_target(target)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.service_config", service_config(retry)), ("grpc.enable_retries", 1)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.target, self.timeout_s, self.retry = target, float(timeout_s), retry
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.recognition = recognition_pb2_grpc.RecognitionServiceStub(self.channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)

    # -- plumbing -------------------------------------------------------------------

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "RecognitionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, fn: Callable, request, timeout_s: float | None = None):
        delays = self.retry.delays()
        while True:
            try:
                return fn(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRYABLE:
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                trailers = {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
                raise RpcFailed(method, code, exc.details() or "", trailers) from None

    # -- recognition ----------------------------------------------------------------

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self._call("ListModels", self.recognition.ListModels, pb.ListModelsRequest()).models)

    def recognize(self, model_id: str, data: Any, top_k: int = 5, return_output: bool = False,
                  artifact: tuple[str, str] | None = None) -> pb.RecognizeResponse:
        """Top-k classes (classifiers) or gallery identities (embedding models) of an
        encoded image or an image tensor ``[N,3,H,W]`` / ``[3,H,W]`` in [0, 1]. ``artifact``:
        ``(id, version)`` of the artifact that protected it (every upload call takes it)."""
        request = pb.RecognizeRequest(model_id=model_id, input=_input(data), top_k=top_k,
                                      return_output=return_output, artifact=_ref(artifact))
        return self._call("Recognize", self.recognition.Recognize, request)

    def recognize_features(self, model_id: str, split_point: str, features: Any, top_k: int = 5,
                           return_output: bool = False, artifact: tuple[str, str] | None = None
                           ) -> pb.RecognizeResponse:
        """The server runs the rest of its split model on shallow features ``[N, ...]``."""
        tensor = _input(features, split_point).features.tensor
        request = pb.RecognizeFeaturesRequest(model_id=model_id, split_point=split_point, features=tensor,
                                              top_k=top_k, return_output=return_output, artifact=_ref(artifact))
        return self._call("RecognizeFeatures", self.recognition.RecognizeFeatures, request)

    def enroll(self, model_id: str, identity: str, data: Any, split_point: str = "",
               artifact: tuple[str, str] | None = None) -> pb.EnrollResponse:
        request = pb.EnrollRequest(model_id=model_id, identity=identity, input=_input(data, split_point),
                                   artifact=_ref(artifact))
        return self._call("Enroll", self.recognition.Enroll, request)

    def verify(self, model_id: str, identity: str, data: Any, threshold: float = 0.0,
               split_point: str = "", artifact: tuple[str, str] | None = None) -> pb.VerifyResponse:
        request = pb.VerifyRequest(model_id=model_id, identity=identity, input=_input(data, split_point),
                                   threshold=threshold, artifact=_ref(artifact))
        return self._call("Verify", self.recognition.Verify, request)

    def identify(self, model_id: str, data: Any, top_k: int = 5, split_point: str = "",
                 artifact: tuple[str, str] | None = None) -> pb.IdentifyResponse:
        request = pb.IdentifyRequest(model_id=model_id, input=_input(data, split_point), top_k=top_k,
                                     artifact=_ref(artifact))
        return self._call("Identify", self.recognition.Identify, request)

    def delete_identity(self, model_id: str, identity: str) -> int:
        request = pb.DeleteIdentityRequest(model_id=model_id, identity=identity)
        return self._call("DeleteIdentity", self.recognition.DeleteIdentity, request).deleted

    # -- artifacts --------------------------------------------------------------------

    def list_artifacts(self, model_id: str = "") -> list[apb.ArtifactInfo]:
        request = apb.ListArtifactsRequest(model_id=model_id)
        return list(self._call("ListArtifacts", self.artifacts.ListArtifacts, request).artifacts)

    def download_artifact(self, artifact_id: str, dest: str | os.PathLike, chunk_size: int = 0,
                          version: str = "") -> Path:
        """Stream an artifact into ``dest/<artifact_id>/`` (replacing what is there) and
        return that folder. File sizes and sha256 are checked against the server's listing;
        the *signature* is checked by :func:`fetch_verified` — the listing comes from the
        same server as the files, so it is no proof of origin."""

        def fetch(request, timeout, metadata):
            return list(self.artifacts.GetArtifact(request, timeout=timeout, metadata=metadata))

        request = apb.GetArtifactRequest(artifact_id=artifact_id, chunk_size=chunk_size, version=version)
        messages = self._call("GetArtifact", fetch, request, timeout_s=max(self.timeout_s, 120.0))
        if not messages or messages[0].WhichOneof("part") != "info":
            raise IntegrityError(f"GetArtifact({artifact_id!r}) did not start with the artifact info")
        info = messages[0].info
        expected = {check_file_name(f.name, artifact_id): f for f in info.files}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{artifact_id}.", dir=dest))
        try:
            handles: dict[str, Any] = {}
            for msg in messages[1:]:
                chunk = msg.chunk
                name = chunk.name
                if name not in expected or Path(name).name != name:
                    raise IntegrityError(f"GetArtifact sent a chunk of unexpected file {name!r}")
                fh = handles.get(name) or handles.setdefault(name, (staging / name).open("wb"))
                if fh.tell() != chunk.offset:
                    raise IntegrityError(f"{name}: chunk at offset {chunk.offset}, expected {fh.tell()}")
                fh.write(chunk.data)
            for fh in handles.values():
                fh.close()
            for name, f in expected.items():
                path = staging / name
                if not path.is_file():
                    raise IntegrityError(f"GetArtifact({artifact_id!r}) sent no data for {name}")
                data = path.read_bytes()
                if len(data) != f.size or hashlib.sha256(data).hexdigest() != f.sha256:
                    raise IntegrityError(f"{name} arrived with {len(data)} bytes / another sha256 than listed "
                                         f"({f.size} bytes); the transfer was corrupted")
            final = dest / artifact_id
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            return final
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def fetch_verified(self, artifact_id: str, dest: str | os.PathLike, public_key: str | os.PathLike | Any,
                       version: str = "") -> tuple[Path, Manifest]:
        """Download an artifact and verify its signature against the provider's public
        key or pinned key set (:class:`photoveil.keyset.KeySet`); ``(folder, manifest)``. A
        folder that does not verify is deleted and :class:`IntegrityError` raised: nothing
        unverified is left to load by mistake."""
        from photoveil.keyset import verify_artifact_with

        folder = self.download_artifact(artifact_id, dest, version=version)
        try:
            return folder, verify_artifact_with(folder, public_key)[0]
        except PhotoveilError:
            shutil.rmtree(folder, ignore_errors=True)
            raise


    def key_statements(self, since_sequence: int = 0) -> list[tuple[bytes, bytes]]:
        """The provider's signed key statements after ``since_sequence``: ``(keys.json, bundle)``, oldest first."""
        request = apb.GetKeySetRequest(since_sequence=since_sequence)
        reply = self._call("GetKeySet", self.artifacts.GetKeySet, request)
        return [(st.keys_json, st.signature) for st in sorted(reply.statements, key=lambda st: st.sequence)]
