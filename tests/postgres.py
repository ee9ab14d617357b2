"""A throwaway PostgreSQL server for tests: ``initdb`` in a temp dir, a unix socket only.

``PostgresCluster.start()`` finds ``initdb``/``pg_ctl`` (PATH, then Debian's
/usr/lib/postgresql/<v>/bin), creates a cluster with trust auth for user ``photoveil``,
starts it listening on a socket in its own folder (no TCP port to collide with) and
``stop()`` removes it. PostgreSQL refuses to run as root: as root the cluster belongs to
``nobody`` (its folder chowned) and the binaries run through ``runuser``.
``Unavailable`` carries the reason a test should skip with.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the cluster's own folder
USER = "photoveil"


class Unavailable(RuntimeError):
    """PostgreSQL cannot be started here (the message says why)."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise Unavailable(f"{name} not found (install the PostgreSQL server: apt-get install postgresql)")
    return found


class PostgresCluster:
    def __init__(self):
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.owner = None
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise Unavailable("running as root and runuser is missing: initdb refuses to run as root")
            self.owner = "nobody"
        self.dir: Path | None = None

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = (["runuser", "-u", self.owner, "--"] if self.owner else []) + list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            log = (self.dir / "server.log").read_text()[-1500:] if self.dir and (self.dir / "server.log").exists() else ""
            raise Unavailable(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}\n{log}")

    def start(self) -> "PostgresCluster":
        # /tmp, not pytest's tmp_path: a unix socket path must stay under ~100 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="pvpg-", dir="/tmp"))
        if self.owner:
            shutil.chown(self.dir, user=self.owner)
        data = self.dir / "data"
        try:
            self._run(self.initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
            opts = f"-k {self.dir} -c listen_addresses='' -p {PORT} -c max_connections=200"
            self._run(self.pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                      "start")
        except (Unavailable, OSError, subprocess.TimeoutExpired) as exc:
            self.stop()
            raise Unavailable(f"PostgreSQL did not start: {exc}") from None
        return self

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.dir}&port={PORT}"

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            try:
                self._run(self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
            except (Unavailable, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
