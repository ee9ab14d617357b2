"""Where photoveil keeps downloaded models and where it finds its data.

Cache resolution order: an explicit path (CLI ``--cache-dir``), the ``PHOTOVEIL_CACHE``
environment variable, then the per-user cache directory of the platform. The pulled face
models live in :func:`models_root`; ``MODELS_MARKER`` there says the pull completed.
"""
from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

ENV_CACHE = "PHOTOVEIL_CACHE"
ENV_LFW = "PHOTOVEIL_LFW"
PACKAGE_ROOT = Path(__file__).resolve().parent
ASSETS = PACKAGE_ROOT / "assets"
MODELS_MARKER = "COMPLETE.json"  # written last by ``photoveil models pull``


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The model cache directory (not created here)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("photoveil"))


def models_root(override: str | os.PathLike | None = None) -> Path:
    """``<cache>/models``: one folder per npm package plus the :data:`MODELS_MARKER` file."""
    return cache_dir(override) / "models"


def models_pulled(override: str | os.PathLike | None = None) -> bool:
    """Whether ``photoveil models pull`` completed into :func:`models_root`."""
    return (models_root(override) / MODELS_MARKER).is_file()


def default_lfw_dir() -> Path:
    """LFW deep-funneled root: ``$PHOTOVEIL_LFW`` or the shared copy beside the checkout."""
    env = os.environ.get(ENV_LFW)
    if env:
        return Path(env).expanduser()
    return PACKAGE_ROOT.parent.parent / "shared" / "data" / "lfw"
