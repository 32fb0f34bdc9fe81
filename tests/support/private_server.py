"""A database server of the test's own, for the scenario that restarts one.

Restarting the shared server would break every other run using it, so the
restart scenario starts a private one from the same binaries: a new PostgreSQL
cluster (initdb, pg_ctl) or MariaDB data directory (mariadb-install-db,
mariadbd) in a temporary directory, on a free loopback port, with no password.
Binaries are looked up in the usual Debian places; SAPOOL_PG_BINDIR and
SAPOOL_MARIADB_BINDIR point elsewhere. The benchmark's servers share the
port and binary lookups.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def free_port() -> int:
    """A loopback port nobody listens on (the caller binds it moments later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateServer:
    """Start, stop and restart a throwaway server; ``settings`` for Django."""

    settings: dict[str, Any]

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sapool-server-"))
        self.port = free_port()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivatePostgres(PrivateServer):
    def __init__(self, bindir: Path) -> None:
        super().__init__()
        self.bindir = bindir
        self.data = self.root / "data"
        self.settings = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": "postgres",
        }
        if _AS_ROOT:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")  # fmt: skip
        self.start()

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        # "fast": what a restart by an administrator or a failover does to
        # clients: open transactions roll back, every session is ended.
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if _AS_ROOT:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)


class PrivateMariaDB(PrivateServer):
    def __init__(self, mariadbd: Path, install_db: Path) -> None:
        super().__init__()
        self.mariadbd = mariadbd
        self.data = self.root / "data"
        self.settings = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "USER": "root",
            "PASSWORD": "",
            "NAME": "mysql",
        }
        self._process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [str(install_db), "--no-defaults",
             f"--datadir={self.data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *self._as_user()],
            check=True, capture_output=True,
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [str(self.mariadbd), "--no-defaults", f"--datadir={self.data}",
             f"--port={self.port}", f"--socket={self.root / 'sock'}",
             "--bind-address=127.0.0.1", f"--log-error={self.root / 'log'}",
             f"--pid-file={self.root / 'pid'}", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", *self._as_user()],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not _accepting(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private MariaDB did not start:\n{log}")
            time.sleep(0.05)

    def stop(self) -> None:
        # SIGTERM: a normal shutdown, which ends every client session.
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(60)
        self._process = None

    @staticmethod
    def _as_user() -> list[str]:
        return ["--user=root"] if _AS_ROOT else []


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's programs (initdb, pg_ctl), if any."""
    given = os.environ.get("SAPOOL_PG_BINDIR")
    if given:
        return Path(given)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def mariadb_programs() -> tuple[Path, Path] | None:
    """mariadbd and mariadb-install-db (Debian puts them in sbin and bin)."""
    dirs = [os.environ.get("SAPOOL_MARIADB_BINDIR", ""), "/usr/sbin", "/usr/bin"]
    found = []
    for program in ("mariadbd", "mariadb-install-db"):
        paths = [Path(d) / program for d in dirs if d] + [
            Path(p) for p in [shutil.which(program)] if p
        ]
        found.append(next((path for path in paths if path.exists()), None))
    server, install_db = found
    return (server, install_db) if server and install_db else None


def start_private_server(vendor: str) -> PrivateServer | None:
    """A running private server of this vendor, or None without the binaries."""
    if vendor == "postgresql":
        bindir = postgres_bindir()
        return PrivatePostgres(bindir) if bindir else None
    programs = mariadb_programs()
    return PrivateMariaDB(*programs) if programs else None
