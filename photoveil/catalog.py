"""A provider's published artifact folder: versions of each artifact, the current one, the retired ones.

Layout (``photoveil artifacts publish|retire|list`` write it, every server replica reads it)::

    <root>/catalog.json                 :class:`Catalog`: per artifact its versions, status, current
    <root>/<artifact_id>/<version>/     an artifact folder (photoveil.artifact), signed
    <root>/_keyset/<sequence>/          the provider's key statements (photoveil.keyset)

The catalog is the only thing that says what is served: a version folder appears there
only after it is complete and signed, and ``catalog.json`` is replaced atomically with a
``generation`` that grows by one per change, so replicas reading the same folder serve
the same set and notice a change by the file's stat. Writers take an exclusive lock on
``<root>/.catalog.lock``. Retiring keeps the files; a version is never overwritten.
Folders directly under ``<root>`` holding an artifact (the layout before versions) are
still served, as one unversioned artifact each.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from photoveil.artifact import open_artifact, verify_hash, write_manifest
from photoveil.errors import IntegrityError, InvalidInput, NotFound

CATALOG_FILE = "catalog.json"
KEYSET_DIR = "_keyset"   # not a valid artifact id, so never taken for an artifact
FORMAT = "photoveil-catalog/1"
ACTIVE, RETIRED = "active", "retired"
# trailing metadata of a FAILED_PRECONDITION answer to an upload from a version no longer accepted
CURRENT_VERSION_KEY = "photoveil-current-version"
ARTIFACT_ID_KEY = "photoveil-artifact-id"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value) or value in (".", ".."):
        raise InvalidInput(f"{what} {str(value)[:80]!r} must be 1-64 characters of letters, digits, '.', '_', "
                           "'+', '-' starting with a letter or digit")
    return value


MODEL_VERSION = re.compile(r"^[!-~]{1,128}$")  # a hosted model's version: a weights hash or package@version


def check_model_version(value: str) -> str:
    if not isinstance(value, str) or not MODEL_VERSION.match(value):
        raise InvalidInput(f"model version {str(value)[:80]!r} must be 1-128 printable ASCII characters without "
                           "spaces (ListModels' version of the hosted model)")
    return value


@dataclass
class VersionEntry:
    version: str
    status: str = ACTIVE
    published: str = ""                   # UTC, ISO 8601
    retired: str = ""
    compatible_model_version: str = ""    # empty: any
    sha256: str = ""                      # of the .pte
    signer: str = ""                      # key id (photoveil.keyset) that signed it


@dataclass
class Entry:
    artifact_id: str
    current: str = ""                     # "" when every version is retired
    versions: list[VersionEntry] = field(default_factory=list)

    def get(self, version: str) -> VersionEntry | None:
        return next((v for v in self.versions if v.version == version), None)

    def served(self) -> list[VersionEntry]:
        return [v for v in self.versions if v.status == ACTIVE]


@dataclass
class Catalog:
    generation: int = 0
    artifacts: dict[str, Entry] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "generation": self.generation,
                           "artifacts": [dataclasses.asdict(e) for e in self.artifacts.values()]}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = CATALOG_FILE) -> Catalog:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            entries = {}
            for e in data["artifacts"]:
                versions = [VersionEntry(**v) for v in e.pop("versions")]
                entry = Entry(**e, versions=versions)
                entries[entry.artifact_id] = entry
            return cls(int(data["generation"]), entries)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{where} is not a {FORMAT} catalog ({exc})") from None

    def entry(self, artifact_id: str) -> Entry:
        entry = self.artifacts.get(artifact_id)
        if entry is None:
            known = ", ".join(self.artifacts) or "none"
            raise NotFound(f"artifact {artifact_id!r} is not in the catalog; published: {known}")
        return entry


def read_catalog(root: str | os.PathLike) -> Catalog:
    """The catalog of ``root`` (empty when it has none yet)."""
    path = Path(root) / CATALOG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Catalog()
    return Catalog.from_json(text, str(path))


def write_catalog(root: str | os.PathLike, catalog: Catalog) -> Path:
    """Replace ``root/catalog.json`` atomically (fsync, then rename): a reader sees the old or the new one."""
    path = Path(root) / CATALOG_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{CATALOG_FILE}.", dir=root)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(catalog.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def version_folder(root: str | os.PathLike, artifact_id: str, version: str) -> Path:
    return Path(root) / artifact_id / version


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[Catalog]:
    """The catalog under the writers' lock; the caller changes it, it is written with generation + 1."""
    if not root.is_dir():
        raise NotFound(f"artifacts root {root} does not exist; create it (the server's artifacts_dir)")
    with open(root / ".catalog.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        catalog = read_catalog(root)
        yield catalog
        catalog.generation += 1
        write_catalog(root, catalog)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def publish(root: str | os.PathLike, source: str | os.PathLike, artifact_id: str, version: str,
            private_key: str | os.PathLike, password: str | None = None, model_version: str = "") -> VersionEntry:
    """Copy an exported artifact folder to ``root/<artifact_id>/<version>/``, write the version (and
    the server model version it is compatible with) into its manifest, sign it, and make it
    the current version. Refuses an existing version (also a retired one) and, when ``root``
    has a key set, a key that is not active in it.
    """
    from photoveil.keyset import KeyHistory, private_key_id
    from photoveil.signing import sign_artifact

    root = Path(root)
    check_name(artifact_id, "artifact id")
    check_name(version, "version")
    if model_version:
        check_model_version(model_version)
    art = open_artifact(source, strict=True)
    verify_hash(art.pte, art.manifest)
    signer = private_key_id(private_key, password)
    keys = KeyHistory(root / KEYSET_DIR).latest()
    if keys is not None and (keys.get(signer) is None or keys.get(signer).status != "active"):
        raise InvalidInput(f"{private_key} (key {signer[:12]}) is not an active key of the provider's key set "
                           f"{keys.sequence} in {root / KEYSET_DIR}; add it with `photoveil artifacts keys add`")
    with _locked(root) as catalog:
        entry = catalog.artifacts.setdefault(artifact_id, Entry(artifact_id))
        final = version_folder(root, artifact_id, version)
        if entry.get(version) is not None:
            raise InvalidInput(f"{artifact_id} version {version} is already published (versions are never "
                               "overwritten: publish a new version)")
        if final.exists():
            raise InvalidInput(f"{final} exists but the catalog does not list it (an interrupted publish?); "
                               "remove the folder or publish another version")
        final.parent.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
        try:
            shutil.copy2(art.pte, staging / art.pte.name)
            manifest = dataclasses.replace(art.manifest, version=version, compatible_model_version=model_version,
                                           program=art.pte.name)
            write_manifest(staging, manifest)
            sign_artifact(staging, private_key, password=password)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record = VersionEntry(version, ACTIVE, _now(), compatible_model_version=model_version,
                              sha256=manifest.sha256, signer=signer)
        entry.versions.append(record)
        entry.current = version
    return record


def retire(root: str | os.PathLike, artifact_id: str, version: str) -> Entry:
    """Mark a version retired (its files stay); the current version becomes the newest one still served."""
    root = Path(root)
    check_name(artifact_id, "artifact id")
    check_name(version, "version")
    with _locked(root) as catalog:
        entry = catalog.entry(artifact_id)
        record = entry.get(version)
        if record is None:
            raise NotFound(f"{artifact_id} has no version {version!r}; versions: "
                           f"{', '.join(v.version for v in entry.versions)}")
        if record.status == RETIRED:
            raise InvalidInput(f"{artifact_id} version {version} is already retired")
        record.status, record.retired = RETIRED, _now()
        served = entry.served()
        if entry.current == version:
            entry.current = served[-1].version if served else ""
    return entry
