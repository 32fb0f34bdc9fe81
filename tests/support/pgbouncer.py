"""A private PgBouncer in front of the test PostgreSQL server, for one test run.

``running_pgbouncer("transaction")`` starts ``pgbouncer`` on a free loopback
port with a throw-away configuration directory and yields where to connect.
On exit the process is stopped and waited for and the directory removed, so
nothing is left behind, even when the block raises.

The upstream server is the one the tests use (``SAPOOL_PG_HOST``,
``SAPOOL_PG_PORT``, ``SAPOOL_PG_USER``, ``SAPOOL_PG_NAME``,
``SAPOOL_PG_PASSWORD``, with the same defaults as ``tests/settings.py``).
Clients are not authenticated (``auth_type = trust``: a loopback port that
lives as long as one test run); PgBouncer logs in to the server with the
password from the environment, and looks up any other user through
``auth_query`` as the configured user, so tests may log in as roles they
create.

PgBouncer refuses to run as root: under root it runs as the ``postgres`` OS
user (``nobody`` when there is none) through ``setpriv``; an ordinary user
runs it as themselves.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tests.support.private_server import free_port

PoolMode = Literal["session", "transaction", "statement"]

#: Where Debian and most distributions install the binary; /usr/sbin is not on
#: an ordinary user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)


@dataclass(frozen=True)
class Upstream:
    """The PostgreSQL server PgBouncer forwards to, as the tests configure it."""

    host: str
    port: int
    user: str
    name: str
    password: str

    @classmethod
    def from_environment(cls) -> Upstream:
        """Read the same variables, with the same defaults, as tests/settings.py."""
        env = os.environ
        return cls(
            host=env.get("SAPOOL_PG_HOST", "127.0.0.1"),
            port=int(env.get("SAPOOL_PG_PORT", "5432")),
            user=env.get("SAPOOL_PG_USER", "postgres"),
            name=env.get("SAPOOL_PG_NAME", "test"),
            password=env.get("SAPOOL_PG_PASSWORD", ""),
        )


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens and how it pools."""

    host: str
    port: int
    pool_mode: PoolMode
    default_pool_size: int
    max_client_conn: int
    upstream: Upstream
    config_dir: Path
    pid: int

    def log(self) -> str:
        """PgBouncer's log so far (for failure messages)."""
        try:
            return (self.config_dir / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""

    def show(self, command: str) -> list[dict[str, Any]]:
        """Run an admin console command (e.g. ``SERVERS``), rows as dicts.

        The console has no transactions and speaks only the simple query
        protocol, which both drivers use for a query without parameters.
        """
        connection = dbapi().connect(
            host=self.host,
            port=self.port,
            user=self.upstream.user,
            password=self.upstream.password,
            dbname="pgbouncer",
        )
        try:
            connection.autocommit = True
            cursor = connection.cursor()
            cursor.execute(f"SHOW {command}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            connection.close()

    def server_pids(self) -> set[int]:
        """Process ids of the server backends PgBouncer holds open right now."""
        return {int(row["remote_pid"]) for row in self.show("SERVERS")}


def dbapi() -> Any:
    """psycopg 3, or psycopg2 where it is hidden (the tests' psycopg2 run)."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        return psycopg2
    return psycopg


def find_pgbouncer() -> str | None:
    """The pgbouncer binary: $SAPOOL_PGBOUNCER if set, else from PATH or sbin."""
    chosen = os.environ.get("SAPOOL_PGBOUNCER")
    if chosen:
        return shutil.which(chosen)
    return shutil.which("pgbouncer", path=_SEARCH_PATH)


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run PgBouncer as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root needs a 'postgres' or 'nobody' OS user")


def _command_prefix(user: pwd.struct_passwd | None) -> list[str]:
    """setpriv execs PgBouncer itself, so our child *is* PgBouncer: signalling
    and waiting on it needs no forwarding (unlike su or runuser)."""
    if user is None:
        return []
    setpriv = shutil.which("setpriv", path=_SEARCH_PATH)
    if setpriv is None:
        raise RuntimeError("running as root needs setpriv (util-linux)")
    name = user.pw_name
    return [setpriv, f"--reuid={name}", f"--regid={name}", "--init-groups"]


def _config(
    upstream: Upstream,
    port: int,
    directory: Path,
    pool_mode: PoolMode,
    default_pool_size: int,
    max_client_conn: int,
    settings: Mapping[str, str | int],
) -> str:
    """pgbouncer.ini: one wildcard database entry pointing at the upstream."""
    options: dict[str, str | int] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",  # no socket file to collide with other instances
        "auth_type": "trust",
        "auth_file": str(directory / "userlist.txt"),
        # Users missing from auth_file (roles the tests create) are looked up
        # with auth_query, logged in as this one.
        "auth_user": upstream.user,
        "admin_users": upstream.user,
        "pool_mode": pool_mode,
        "default_pool_size": default_pool_size,
        "max_client_conn": max_client_conn,
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "log_connections": 0,
        "log_disconnections": 0,
        **settings,
    }
    # Any database name goes to the same server: the tests' database, its
    # test_ copies, and "postgres", which Django's test setup connects to.
    lines = ["[databases]", f"* = host={upstream.host} port={upstream.port}"]
    lines += ["", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _wait_until_listening(
    process: subprocess.Popen[bytes], port: int, log: Path
) -> None:
    """Until PgBouncer says it listens on the port, and accepts a connection.

    The log line tells PgBouncer from another program that took the port
    between our probe and PgBouncer's bind (PgBouncer then exits).
    """
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at startup ({process.returncode})")
        with contextlib.suppress(OSError):
            if f"listening on 127.0.0.1:{port}" in log.read_text(errors="replace"):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
        time.sleep(0.02)
    raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{port} within 15 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM is PgBouncer's immediate shutdown: clients and servers dropped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_pgbouncer(
    pool_mode: PoolMode = "transaction",
    *,
    default_pool_size: int = 5,
    max_client_conn: int = 100,
    upstream: Upstream | None = None,
    settings: Mapping[str, str | int] | None = None,
) -> Iterator[PgBouncer]:
    """Run a private PgBouncer for the duration of the block.

    ``settings`` adds or overrides ``[pgbouncer]`` options. Raises
    RuntimeError, with PgBouncer's log, when it does not come up.
    """
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    upstream = upstream or Upstream.from_environment()
    user = _unprivileged_user()
    prefix = _command_prefix(user)
    directory = Path(tempfile.mkdtemp(prefix="sapool-pgbouncer-"))
    log = directory / "pgbouncer.log"
    process: subprocess.Popen[bytes] | None = None

    def write(name: str, text: str) -> Path:
        """A file only PgBouncer's user may read (auth_file has the password)."""
        path = directory / name
        path.write_text(text)
        path.chmod(0o600)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    try:
        if user is not None:  # PgBouncer writes its log and pid file here
            os.chown(directory, user.pw_uid, user.pw_gid)
        password = upstream.password.replace('"', '""')
        write("userlist.txt", f'"{upstream.user}" "{password}"\n')
        for attempt in range(3):  # the free port may be taken before we bind it
            port = free_port()
            ini = write(
                "pgbouncer.ini",
                _config(
                    upstream,
                    port,
                    directory,
                    pool_mode,
                    default_pool_size,
                    max_client_conn,
                    settings or {},
                ),
            )
            process = subprocess.Popen(
                [*prefix, binary, "--quiet", str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=directory,
                start_new_session=True,  # a Ctrl-C on the tests is ours to handle
            )
            try:
                _wait_until_listening(process, port, log)
                break
            except RuntimeError as exc:
                _stop(process)
                if attempt == 2:
                    text = log.read_text(errors="replace") if log.exists() else ""
                    raise RuntimeError(f"{exc}; its log:\n{text}") from None
        assert process is not None
        yield PgBouncer(
            host="127.0.0.1",
            port=port,
            pool_mode=pool_mode,
            default_pool_size=default_pool_size,
            max_client_conn=max_client_conn,
            upstream=upstream,
            config_dir=directory,
            pid=process.pid,
        )
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(directory, ignore_errors=True)
