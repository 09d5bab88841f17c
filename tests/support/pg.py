"""A throw-away PostgreSQL cluster for tests, from the server binaries `make test` installs (Debian's postgresql).

initdb and postgres refuse to run as root, and CI runs as root: there the cluster runs as the `postgres`
user the package creates (runuser), in a directory of its own. It listens on a Unix socket in that
directory only (listen_addresses = ''), with trust authentication: nothing reaches it from the network,
and no password exists to leak. Each test gets a database of its own (`Cluster.new_database`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def server_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True):
        if (root / "initdb").exists() and (root / "pg_ctl").exists():
            return root
    return None


@dataclass
class Cluster:
    base: Path
    bin: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.base} port={self.port} dbname={dbname} user=signing"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                        "-l", str(self.base / "server.log"), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.pg_ctl("-o", f"-k {self.base} -p {self.port} -c listen_addresses='' -c fsync=off "
                          "-c max_connections=200", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    @contextmanager
    def hung(self) -> Iterator[None]:
        """The server stops answering without closing anything (SIGSTOP to every process of the cluster), as
        a database host that hangs or a network that drops packets: clients wait, no error comes back."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # first: it forks no backend after this
        pids = [postmaster]
        try:
            children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
            for pid in map(int, children):
                os.kill(pid, signal.SIGSTOP)
                pids.append(pid)
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def new_database(self) -> str:
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


def start_cluster() -> Cluster:
    binaries = server_bin()
    if binaries is None:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql: `make test` installs postgresql")
    base = Path(tempfile.mkdtemp(prefix="signing-agent-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    base.chmod(0o755)  # the socket lives here; the tests (root, or this user) connect to it
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "signing",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    cluster = Cluster(base=base, bin=binaries, port=50000 + secrets.randbelow(10000), as_user=as_user)
    cluster.start()
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    try:
        cluster.stop()
    except subprocess.CalledProcessError:
        pass  # stopped already
    shutil.rmtree(cluster.base, ignore_errors=True)


def host_config(env, name: str, dsn: str, policy: Path | None = None, extra: str = "") -> Path:
    """An agent host's config (support.deploy.Env) on the shared database DSN: its own state directory and
    audit chain name (NAME), POLICY's file if given, and EXTRA tables (a [quorum])."""
    return env.write_config(name, extra=f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nhost = "{name}"\n'
                                        f'[state]\ndir = "state-{name}"\n'
                                        + (f'[policy]\nfile = "{policy.name}"\n' if policy is not None else "")
                                        + extra)

