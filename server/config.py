"""``photoveil serve`` configuration: a TOML or JSON file -> :class:`ServerConfig`.

Unknown keys are errors (a typo must not silently fall back to a default). Relative
paths are resolved against the config file's folder. Tokens are never in the file:
``auth.token_env`` names an environment variable holding one or more comma-separated
bearer tokens.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photoveil.errors import InvalidInput, NotFound

MODEL_SOURCES = ("registry", "zoo", "tiny")
GALLERY_INDEXES = ("auto", "exact", "flat", "ivf", "hnsw")
GALLERY_URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass
class ModelConfig:
    id: str
    # registry: photoveil.facemodels.registry, zoo: photoveil.zoo.checkpoints,
    # tiny: the small seeded nets of photoveil.server.tiny_models (tiny-embed, tiny-cls)
    source: str = "registry"
    name: str = ""                  # registry name / zoo arch; default: id
    verify_threshold: float = 0.5   # embedding models: cosine similarity for Verify

    def __post_init__(self):
        if self.source not in MODEL_SOURCES:
            raise InvalidInput(f"models[{self.id!r}].source {self.source!r}; accepted: {', '.join(MODEL_SOURCES)}")
        if not -1.0 < float(self.verify_threshold) <= 1.0:
            raise InvalidInput(f"models[{self.id!r}].verify_threshold must be in (-1, 1]")
        self.name = self.name or self.id
        if self.source == "tiny" and self.name not in ("tiny-embed", "tiny-cls"):
            raise InvalidInput(f"models[{self.id!r}]: tiny models are tiny-embed and tiny-cls, got {self.name!r}")


@dataclass
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    workers: int = 1            # concurrent batched forward passes

    def __post_init__(self):
        if not 1 <= self.max_batch_size <= 4096:
            raise InvalidInput(f"batching.max_batch_size must be in 1..4096, got {self.max_batch_size}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise InvalidInput(f"batching.max_wait_ms must be in 0..1000, got {self.max_wait_ms}")
        if not 1 <= self.workers <= 64:
            raise InvalidInput(f"batching.workers must be in 1..64, got {self.workers}")


@dataclass
class AuthConfig:
    token_env: str = ""         # name of the env var with comma-separated tokens; empty: no auth

    def tokens(self) -> list[str]:
        if not self.token_env:
            return []
        raw = os.environ.get(self.token_env, "")
        tokens = [t.strip() for t in raw.split(",") if t.strip()]
        if not tokens:
            raise InvalidInput(f"auth.token_env names ${self.token_env}, which is unset or empty; "
                               "export one or more comma-separated bearer tokens in it")
        return tokens


@dataclass
class TlsConfig:
    cert: str = ""              # PEM certificate chain
    key: str = ""               # PEM private key
    client_ca: str = ""         # PEM CA bundle: set to require client certificates (mTLS)

    def __post_init__(self):
        if bool(self.cert) != bool(self.key):
            raise InvalidInput("tls.cert and tls.key must be set together")
        if self.client_ca and not self.cert:
            raise InvalidInput("tls.client_ca needs tls.cert and tls.key")

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


@dataclass
class LimitsConfig:
    max_message_bytes: int = 16 << 20   # gRPC receive/send limit (-> RESOURCE_EXHAUSTED)
    max_image_pixels: int = 16_000_000  # decoded encoded-image size (a 4000x4000 photo), checked from the header
    max_concurrent_decodes: int = 2     # JPEG/PNG decodes at once: peak decode memory ~ this x 4 B x max_image_pixels
    max_batch_items: int = 64           # images/feature rows per request
    rate_per_s: float = 0.0             # token bucket per principal (token, else peer host), per stream item; 0: off
    burst: float = 50.0
    max_concurrent_rpcs: int = 0        # 0: unbounded (RESOURCE_EXHAUSTED beyond); health/reflection exempt
    auth_failures_per_s: float = 1.0    # failed authentications per peer host (token bucket); then refused
    auth_failure_burst: float = 20.0

    def __post_init__(self):
        if not 1024 <= self.max_message_bytes <= 1 << 30:
            raise InvalidInput(f"limits.max_message_bytes must be in 1024..{1 << 30}")
        if self.max_image_pixels < 1 or self.max_batch_items < 1:
            raise InvalidInput("limits.max_image_pixels and limits.max_batch_items must be >= 1")
        if not 1 <= self.max_concurrent_decodes <= 256:
            raise InvalidInput(f"limits.max_concurrent_decodes must be in 1..256, got {self.max_concurrent_decodes}")
        if self.auth_failures_per_s <= 0 or self.auth_failure_burst < 1:
            raise InvalidInput("limits.auth_failures_per_s > 0 and limits.auth_failure_burst >= 1")
        if self.rate_per_s < 0 or self.burst < 1 or self.max_concurrent_rpcs < 0:
            raise InvalidInput("limits.rate_per_s >= 0, limits.burst >= 1, limits.max_concurrent_rpcs >= 0")


@dataclass
class GalleryIndexConfig:
    """How Identify searches a model's embeddings (``[gallery_index]``; see photoveil.server.vector_index)."""

    # exact: a numpy scan of every embedding (the reference); flat: a FAISS flat index (exact too);
    # ivf: a FAISS inverted-file index (approximate); hnsw: a FAISS HNSW graph (approximate);
    # auto: flat below ivf_threshold, ivf from it on
    kind: str = "auto"
    ivf_threshold: int = 50_000     # auto: embeddings of one model from which the IVF index is used
    # ivf: inverted lists scanned per query (recall vs latency). ~4 sqrt(n) lists are trained, so
    # 384 is ~10 % of them at 10^6 entries: recall@1 0.99 at p99 < 5 ms there (docs/server.md)
    nprobe: int = 384
    # hnsw: a FAISS HNSW graph (approximate; deletions hidden until a rebuild); neighbours per node and
    # the candidate list width per query (recall vs latency, photoveil gallery bench)
    hnsw_m: int = 32
    ef_search: int = 64
    # 0: every Identify/Verify asks the store for its generation, so it sees every enrolment that was
    # acknowledged (by any replica) before it started; > 0: asks at most this often (staleness bound)
    refresh_ms: float = 0.0

    def __post_init__(self):
        if self.kind not in GALLERY_INDEXES:
            raise InvalidInput(f"gallery_index.kind {self.kind!r}; accepted: {', '.join(GALLERY_INDEXES)}")
        if not 1 <= self.ivf_threshold <= 1 << 31:
            raise InvalidInput(f"gallery_index.ivf_threshold must be in 1..{1 << 31}, got {self.ivf_threshold}")
        if not 1 <= self.nprobe <= 65536:
            raise InvalidInput(f"gallery_index.nprobe must be in 1..65536, got {self.nprobe}")
        if not 4 <= self.hnsw_m <= 128:
            raise InvalidInput(f"gallery_index.hnsw_m must be in 4..128, got {self.hnsw_m}")
        if not 1 <= self.ef_search <= 65536:
            raise InvalidInput(f"gallery_index.ef_search must be in 1..65536, got {self.ef_search}")
        if not 0 <= self.refresh_ms <= 60_000:
            raise InvalidInput(f"gallery_index.refresh_ms must be in 0..60000, got {self.refresh_ms}")


@dataclass
class ServerConfig:
    bind: str = "127.0.0.1:50051"
    models: list[ModelConfig] = field(default_factory=list)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    gallery_path: str = ""              # default: <cache>/gallery.sqlite3; ":memory:" for tests
    gallery_synchronous: str = "FULL"   # SQLite synchronous: FULL survives power loss too
    # PostgreSQL gallery shared by replicas, e.g. postgresql://user@db.internal/photoveil (libpq URI;
    # a password belongs in PGPASSWORD / ~/.pgpass, not here); empty: the SQLite file gallery_path
    gallery_url: str = ""
    gallery_pool_size: int = 8          # PostgreSQL connections per server process
    gallery_index: GalleryIndexConfig = field(default_factory=GalleryIndexConfig)
    artifacts_dir: str = ""             # empty: ArtifactService lists nothing
    artifacts_public_key: str = ""      # provider's PEM public key: ArtifactInfo.signed = the signature verifies
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    workers: int = 64                   # gRPC handler threads (>= concurrent clients to batch them)
    grace_s: float = 10.0               # shutdown: in-flight calls get this long to finish
    drain_s: float = 0.0                # shutdown: NOT_SERVING this long before new calls are refused
    torch_threads: int = 0              # 0: torch's default

    def __post_init__(self):
        if ":" not in self.bind:
            raise InvalidInput(f"bind {self.bind!r} must be HOST:PORT (e.g. 127.0.0.1:50051, [::]:50051)")
        if not 1 <= self.workers <= 1024:
            raise InvalidInput(f"workers must be in 1..1024, got {self.workers}")
        if self.limits.max_concurrent_rpcs >= self.workers:
            raise InvalidInput(f"limits.max_concurrent_rpcs ({self.limits.max_concurrent_rpcs}) must be below workers "
                               f"({self.workers}): health checks need a free handler thread")
        if not 0 <= self.grace_s <= 600 or not 0 <= self.drain_s <= 600:
            raise InvalidInput(f"grace_s and drain_s must be in 0..600, got {self.grace_s}, {self.drain_s}")
        if self.gallery_url:
            if not self.gallery_url.startswith(GALLERY_URL_SCHEMES):
                raise InvalidInput(f"gallery_url {self.gallery_url.split('@')[-1]!r} must start with "
                                   f"{' or '.join(GALLERY_URL_SCHEMES)} (empty: the SQLite file gallery_path)")
            if self.gallery_path:
                raise InvalidInput("set gallery_url (PostgreSQL) or gallery_path (SQLite), not both")
        if not 1 <= self.gallery_pool_size <= 256:
            raise InvalidInput(f"gallery_pool_size must be in 1..256, got {self.gallery_pool_size}")
        ids = [m.id for m in self.models]
        if len(ids) != len(set(ids)):
            raise InvalidInput(f"model ids must be unique, got {ids}")


def _build(cls, data: Any, where: str):
    """Instantiate a (nested) config dataclass from plain data, refusing unknown keys."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{where or 'config'} must be a table/object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidInput(f"unknown key(s) {unknown} in {where or 'config'}; accepted: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = {"ModelConfig": ModelConfig, "BatchingConfig": BatchingConfig, "AuthConfig": AuthConfig,
               "TlsConfig": TlsConfig, "LimitsConfig": LimitsConfig, "GalleryIndexConfig": GalleryIndexConfig}
        key = f"{where}.{name}" if where else name
        if ftype in sub:
            value = _build(sub[ftype], value, key)
        elif ftype == "list[ModelConfig]":
            if not isinstance(value, list):
                raise InvalidInput(f"{key} must be a list of model tables")
            value = [_build(ModelConfig, v, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[ftype]
            if isinstance(value, bool) and ftype != "bool" or not isinstance(value, expected):
                raise InvalidInput(f"{key} must be {ftype}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field (models[].id) is missing
        raise InvalidInput(f"{where or 'config'}: {exc}") from None


def config_from_dict(data: dict, base_dir: str | Path | None = None) -> ServerConfig:
    config = _build(ServerConfig, data, "")
    if base_dir is not None:
        base = Path(base_dir)

        def resolve(p: str) -> str:
            return str(base / p) if p and p != ":memory:" and not Path(p).is_absolute() else p

        config.gallery_path = resolve(config.gallery_path)
        config.artifacts_dir = resolve(config.artifacts_dir)
        config.artifacts_public_key = resolve(config.artifacts_public_key)
        for tls_field in ("cert", "key", "client_ca"):
            setattr(config.tls, tls_field, resolve(getattr(config.tls, tls_field)))
    return config


def load_config(path: str | Path) -> ServerConfig:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidInput(f"config {path} must end in .toml or .json")
    except (ValueError,) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"config {path} does not parse: {exc}") from None
    return config_from_dict(data, path.parent)
