"""Database servers for the benchmark, with password authentication over TCP.

PostgreSQL: a private cluster started from the installed PostgreSQL binaries,
with scram-sha-256 for every TCP login and statement logging we can switch on
for a counting pass. The system server usually trusts loopback, which would
hide exactly the connect cost a pool removes, and its configuration is not
ours to edit. MariaDB/MySQL: the local server, with a user and a database the
benchmark creates (native password auth over TCP) and drops afterwards.

Both report what the server saw: statements (and pings) and connections.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.private_server import free_port, postgres_bindir

BENCH_USER = "sapool_bench"
BENCH_DB = "sapool_bench"
ROWS = 1000


@dataclass
class Counts:
    """What a server saw during a stretch of time."""

    statements: int
    connections: int


def _seed_sql(vendor: str) -> list[str]:
    serial = "SERIAL" if vendor == "postgresql" else "INTEGER AUTO_INCREMENT"
    money = "NUMERIC(10, 2)"
    return [
        "DROP TABLE IF EXISTS bench_item",
        f"CREATE TABLE bench_item (id {serial} PRIMARY KEY, name VARCHAR(100) "
        f"NOT NULL, price {money} NOT NULL, stock INTEGER NOT NULL)",
        "CREATE INDEX bench_item_price ON bench_item (price)",
        "INSERT INTO bench_item (name, price, stock) VALUES "
        + ", ".join(
            f"('item {i}', {(i * 37) % 1000 / 10 + 1:.2f}, {(i * 13) % 7})"
            for i in range(1, ROWS + 1)
        ),
    ]


class PostgreSQLCluster:
    """A throwaway PostgreSQL cluster on a free loopback port."""

    vendor = "postgresql"

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.admin_password = secrets.token_urlsafe(16)
        self.directory = Path(tempfile.mkdtemp(prefix="sapool-bench-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    def start(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        if self._as_postgres:
            shutil.chown(self.directory, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-instructions",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": "300",
            "log_line_prefix": "'%m [%p] user=%u '",
            "log_connections": "on",
            "log_statement": "'none'",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        admin = self.admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute(
                    f"CREATE ROLE {BENCH_USER} LOGIN PASSWORD '{self.password}'"
                )
                cursor.execute(f"CREATE DATABASE {BENCH_DB} OWNER {BENCH_USER}")
        finally:
            admin.close()
        seed = self.connect(BENCH_USER, self.password, BENCH_DB)
        try:
            with seed.cursor() as cursor:
                for statement in _seed_sql(self.vendor):
                    cursor.execute(statement)
            seed.commit()
        finally:
            seed.close()

    def pid(self) -> int | None:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def connect(self, user: str, password: str, dbname: str) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
        )

    def admin(self) -> Any:
        connection = self.connect("postgres", self.admin_password, "postgres")
        connection.autocommit = True
        return connection

    def database_settings(self) -> dict[str, Any]:
        return {
            "NAME": BENCH_DB,
            "USER": BENCH_USER,
            "PASSWORD": self.password,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }

    def rejects_wrong_password(self) -> bool:
        """Proof that logins really authenticate (scram), not trust."""
        try:
            self.connect(BENCH_USER, self.password + "x", BENCH_DB).close()
        except Exception:
            return True
        return False

    def set_statement_logging(self, on: bool) -> None:
        admin = self.admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute(
                    f"ALTER SYSTEM SET log_statement = '{'all' if on else 'none'}'"
                )
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            admin.close()

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def counts_since(self, offset: int) -> Counts:
        """Statements and logins of the benchmark user, from the server's log."""
        with open(self.log, errors="replace") as log:
            log.seek(offset)
            lines = [line for line in log if f"user={BENCH_USER} " in line]
        statements = sum(1 for line in lines if _PG_STATEMENT.search(line))
        connections = sum(1 for line in lines if "connection authorized" in line)
        return Counts(statements, connections)

    def _run(self, program: str, *args: str) -> None:
        command = [str(Path(self.bindir) / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.directory)


_PG_STATEMENT = re.compile(r"LOG:  (statement|execute [^:]*): ")


def _postgres_bindir() -> str:
    found = postgres_bindir()
    if found is None:
        raise SystemExit(
            "benchmark: no PostgreSQL binaries (initdb) found; "
            "install postgresql or set SAPOOL_PG_BINDIR"
        )
    return str(found)


class MySQLServer:
    """The local MariaDB/MySQL server, with a benchmark user and database."""

    vendor = "mysql"

    def __init__(self) -> None:
        self.host = os.environ.get("SAPOOL_MYSQL_HOST", "127.0.0.1")
        self.port = int(os.environ.get("SAPOOL_MYSQL_PORT", "3306"))
        self.admin_user = os.environ.get("SAPOOL_MYSQL_USER", "root")
        self.admin_password = os.environ.get("SAPOOL_MYSQL_PASSWORD", "")
        self.password = secrets.token_urlsafe(16)

    def start(self) -> None:
        admin = self.admin()
        try:
            cursor = admin.cursor()
            cursor.execute(f"DROP USER IF EXISTS '{BENCH_USER}'@'{self.host}'")
            cursor.execute(
                f"CREATE USER '{BENCH_USER}'@'{self.host}' "
                f"IDENTIFIED BY '{self.password}'"
            )
            cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            cursor.execute(f"CREATE DATABASE {BENCH_DB} CHARACTER SET utf8mb4")
            cursor.execute(f"GRANT ALL ON {BENCH_DB}.* TO '{BENCH_USER}'@'{self.host}'")
        finally:
            admin.close()
        seed = self.connect(BENCH_USER, self.password, BENCH_DB)
        try:
            cursor = seed.cursor()
            for statement in _seed_sql(self.vendor):
                cursor.execute(statement)
            seed.commit()
        finally:
            seed.close()

    def stop(self) -> None:
        admin = self.admin()
        try:
            cursor = admin.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            cursor.execute(f"DROP USER IF EXISTS '{BENCH_USER}'@'{self.host}'")
        finally:
            admin.close()

    def pid(self) -> int | None:
        """The server's process id, when it runs on this machine."""
        admin = self.admin()
        try:
            cursor = admin.cursor()
            cursor.execute("SELECT @@pid_file")
            (pid_file,) = cursor.fetchone()
        finally:
            admin.close()
        try:
            return int(Path(pid_file).read_text().split()[0])
        except (OSError, ValueError):
            return None

    def connect(self, user: str, password: str, database: str | None) -> Any:
        import MySQLdb

        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
        }
        if database:
            kwargs["database"] = database
        return MySQLdb.connect(**kwargs)

    def admin(self) -> Any:
        return self.connect(self.admin_user, self.admin_password, None)

    def database_settings(self) -> dict[str, Any]:
        return {
            "NAME": BENCH_DB,
            "USER": BENCH_USER,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": str(self.port),
        }

    def rejects_wrong_password(self) -> bool:
        try:
            self.connect(BENCH_USER, self.password + "x", BENCH_DB).close()
        except Exception:
            return True
        return False

    def set_statement_logging(self, on: bool) -> None:
        """Counters are always on."""

    def _status(self) -> dict[str, int]:
        cursor = self._observer.cursor()
        cursor.execute(
            "SHOW GLOBAL STATUS WHERE Variable_name IN "
            "('Questions', 'Com_admin_commands', 'Connections')"
        )
        return {name: int(value) for name, value in cursor.fetchall()}

    def log_offset(self) -> int:
        """Start counting; the server's counters are global, so keep it quiet."""
        self._observer = self.admin()
        self._start = self._status()
        return 0

    def counts_since(self, offset: int) -> Counts:
        end = self._status()
        self._observer.close()
        # The second SHOW STATUS is the only statement of our own in between.
        statements = (
            end["Questions"]
            + end["Com_admin_commands"]
            - self._start["Questions"]
            - self._start["Com_admin_commands"]
            - 1
        )
        return Counts(statements, end["Connections"] - self._start["Connections"])
