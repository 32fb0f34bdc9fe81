"""See django_sapool work: ``nox -s demo`` (or ``python examples/demo.py``).

Runs the example shop (examples/shop) under gunicorn twice, once with Django's
stock backend (a new server connection per request) and once with
django_sapool's, drives the same load at both, and prints what each cost:
requests per second and server connections opened, counted by the server.

The database: SAPOOL_DEMO_DATABASE_URL if set (``postgresql://user:pw@host:
port/name`` or ``mysql://user:pw@host:port/name``; the demo creates a table
there), else an embedded PostgreSQL from the ``pgserver`` package in a
temporary directory. Everything the demo starts, it stops.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

SHOP = Path(__file__).resolve().parent / "shop"
SECONDS = float(os.environ.get("SAPOOL_DEMO_SECONDS", "6"))
CLIENTS = 8
COUNTERS = ("requests_num", "connections_num", "requests_wait_ms", "requests_timeouts")


@dataclass(frozen=True)
class Database:
    """Where the shop's data lives; ``env`` is what shop/settings.py reads."""

    vendor: str
    name: str
    user: str
    password: str
    host: str
    port: str
    description: str

    def env(self) -> dict[str, str]:
        return {
            "DEMO_DB_VENDOR": self.vendor,
            "DEMO_DB_NAME": self.name,
            "DEMO_DB_USER": self.user,
            "DEMO_DB_PASSWORD": self.password,
            "DEMO_DB_HOST": self.host,
            "DEMO_DB_PORT": self.port,
        }

    def connections_opened(self) -> int:
        """The server's own count of connections made so far (to this database)."""
        if self.vendor == "mysql":
            import MySQLdb

            kwargs: dict[str, Any] = {"user": self.user, "passwd": self.password}
            kwargs.update(host=self.host or "localhost", port=int(self.port or 3306))
            connection = MySQLdb.connect(**kwargs)
            try:
                cursor = connection.cursor()
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
                row: Any = cursor.fetchone()
                return int(row[1]) - 1  # not counting this connection
            finally:
                connection.close()  # type: ignore[no-untyped-call]
        # Asked from another database, so asking is not counted.
        maintenance = "template1" if self.name == "postgres" else "postgres"
        with _pg_connect(self, maintenance) as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s",
                [self.name],
            )
            row = cursor.fetchone()
            return int(row[0])


@contextlib.contextmanager
def _pg_connect(database: Database, dbname: str) -> Iterator[Any]:
    try:
        import psycopg as driver
    except ImportError:  # pragma: no cover - psycopg2-only installs
        import psycopg2 as driver  # type: ignore[no-redef]
    connection: Any = driver.connect(
        dbname=dbname,
        user=database.user,
        password=database.password,
        host=database.host,
        port=database.port or "5432",
    )
    connection.autocommit = True
    try:
        cursor = connection.cursor()
        yield cursor
    finally:
        connection.close()


@contextlib.contextmanager
def database() -> Iterator[Database]:
    """The configured server, or an embedded PostgreSQL for the demo's lifetime."""
    url = os.environ.get("SAPOOL_DEMO_DATABASE_URL")
    if url:
        parts = urlsplit(url)
        vendor = {"postgres": "postgresql", "postgresql": "postgresql"}.get(
            parts.scheme, parts.scheme
        )
        if vendor not in {"postgresql", "mysql"}:
            raise SystemExit(
                "SAPOOL_DEMO_DATABASE_URL must be postgresql:// or mysql://"
            )
        yield Database(
            vendor=vendor,
            name=parts.path.lstrip("/") or "demo",
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "",
            port=str(parts.port or ""),
            description=f"{vendor} at {parts.hostname}:{parts.port or 'default'}",
        )
        return
    # pgserver keeps a lock file in the user's runtime directory; without
    # XDG_RUNTIME_DIR (root, containers) platformdirs warns and uses /tmp.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    import pgserver

    with tempfile.TemporaryDirectory(prefix="sapool-demo-") as workdir:
        os.chmod(workdir, 0o755)  # as root, pgserver runs postgres as another user
        print("starting an embedded PostgreSQL (pgserver) ...", flush=True)
        server = pgserver.get_server(Path(workdir) / "pgdata", cleanup_mode="delete")
        try:
            server.psql("CREATE DATABASE demo;")
            socket_dir = urlsplit(server.get_uri()).query.split("host=")[-1]
            yield Database(
                vendor="postgresql",
                name="demo",
                user="postgres",
                password="",
                host=socket_dir,
                port="",
                description="embedded PostgreSQL (pgserver), no server to install",
            )
        finally:
            server.cleanup()


def manage(db: Database, *args: str) -> None:
    env = {**os.environ, **db.env(), "DEMO_ENGINE": "sapool"}
    subprocess.run(
        [sys.executable, "manage.py", *args, "-v", "0"], cwd=SHOP, env=env, check=True
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gunicorn(db: Database, engine: str) -> Iterator[int]:
    """The shop under gunicorn (examples/shop/gunicorn.conf.py) on a free port."""
    port = free_port()
    env = {**os.environ, **db.env(), "DEMO_ENGINE": engine}
    env["PYTHONPATH"] = os.pathsep.join([str(SHOP), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=SHOP,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _responds(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn ({engine}) did not start")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _responds(port: int) -> bool:
    try:
        return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "/")[0]
    except OSError:
        return False


def _get(client: http.client.HTTPConnection, path: str) -> tuple[bool, bytes]:
    client.request("GET", path)
    response = client.getresponse()
    return response.status == 200, response.read()


def drive(port: int, label: str) -> tuple[int, int]:
    """CLIENTS keep-alive clients for SECONDS; returns (succeeded, failed)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = number
        while time.monotonic() < stop:
            n += 1
            path = "/" if n % 2 else f"/product/{n % 200 + 1}/"
            try:
                ok = _get(connection, path)[0]
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
            with lock:
                counts["ok" if ok else "failed"] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # On a terminal one line updates in place; in a log, a line a second.
    ending, pause = ("", 0.25) if sys.stdout.isatty() else ("\n", 1.0)
    while any(thread.is_alive() for thread in threads):
        time.sleep(pause)
        elapsed = min(time.monotonic() - started, SECONDS)
        print(
            f"\r  {label:<40} {elapsed:4.1f}/{SECONDS:g} s {counts['ok']:6d} requests"
            f" {counts['ok'] / max(elapsed, 0.001):5.0f} req/s",
            end=ending,
            flush=True,
        )
    if ending == "":
        print()
    return counts["ok"], counts["failed"]


def pool_stats(port: int) -> dict[int, dict[str, int]]:
    """Each gunicorn worker's get_stats("default"), asked until all answered."""
    seen: dict[int, dict[str, int]] = {}
    for _ in range(60):
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        answer = json.loads(_get(client, "/pool-stats/")[1])
        client.close()
        seen[answer["pid"]] = answer["stats"]
        if len(seen) == 2:  # gunicorn.conf.py: workers = 2
            break
    return seen


@dataclass
class Run:
    label: str
    requests: int
    failed: int
    opened: int

    @property
    def per_second(self) -> float:
        return self.requests / SECONDS


def main() -> None:
    with database() as db:
        print(f"database: {db.description}")
        manage(db, "migrate")
        manage(db, "seed")
        print(
            f"example shop under gunicorn: 2 gthread workers x 4 threads; "
            f"{CLIENTS} clients for {SECONDS:g} s per backend\n"
        )
        runs: list[Run] = []
        stats: dict[int, dict[str, int]] = {}
        for engine, label in (
            ("stock", "Django's backend (connect per request)"),
            ("sapool", "django_sapool (pooled)"),
        ):
            before = db.connections_opened()
            with gunicorn(db, engine) as port:
                done, failed = drive(port, label)
                if engine == "sapool":
                    stats = pool_stats(port)
            time.sleep(0.5)  # the server counts a session when it ends
            runs.append(Run(label, done, failed, db.connections_opened() - before))
        report(runs, stats)


def report(runs: list[Run], stats: dict[int, dict[str, int]]) -> None:
    print(f"\n{'':40} {'req/s':>7} {'failed':>7} {'server connections opened':>27}")
    for run in runs:
        print(
            f"{run.label:40} {run.per_second:7.0f} {run.failed:7d} "
            f"{run.opened:12d} ({1000 * run.opened / max(run.requests, 1):.0f} "
            "per 1000 requests)"
        )
    stock, pooled = runs
    print(
        f"\ndjango_sapool served {pooled.per_second / stock.per_second:.1f}x the "
        "requests per second of Django's stock backend."
    )
    total = {key: sum(worker[key] for worker in stats.values()) for key in COUNTERS}
    print(
        f"pool stats ({len(stats)} workers, django_sapool.get_stats()): "
        f"{total['requests_num']} checkouts, {total['connections_num']} connections "
        "opened, "
        f"{total['requests_wait_ms']} ms waited in all, "
        f"{total['requests_timeouts']} timeouts"
    )


if __name__ == "__main__":
    main()
