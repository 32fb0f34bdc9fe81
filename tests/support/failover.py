"""The application on private servers that fail over or restart under it.

tests/test_failover.py and tests/test_restart.py run an application's
requests against private servers (tests/support/private_server.py) while
they switch over, turn read-only or restart. Here: the application's login
and table on such a server, its requests (a committed write each, and what
each saw), the loads that run across a switchover or a restart, and a
count of the statements the application sends (to show that a busy pool
sends no ping).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.db import Error as DatabaseError

import django_sapool
from tests.support.fixtures import private_server_or_skip
from tests.support.pool_alias import PoolAliasFactory
from tests.support.private_server import PrivateServer
from tests.support.server import VENDOR, Observer, create_login, query_value
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import threads_running, wait_until

#: The application's account: no SUPER, no READ_ONLY ADMIN on MariaDB (those
#: may write on a read-only server), not a superuser on PostgreSQL.
APP_USER, APP_PASSWORD, APP_DB = "app", "app-secret", "app"
WRITE = "INSERT INTO failover_rows (request) VALUES (%s)"
#: The switchover's writers.
THREADS = 6


def start_app_server() -> PrivateServer:
    """A private server (skipped without one) with the application's login and
    its table, ``failover_rows``."""
    private = private_server_or_skip()
    try:
        admin = Observer(**private.settings)
        try:
            if VENDOR == "mysql":
                admin.rows(f"CREATE DATABASE {APP_DB}")
                admin.close()
                admin = Observer(**admin_settings(private))
            create_login(admin, APP_USER, APP_PASSWORD)
            engine = " ENGINE=InnoDB" if VENDOR == "mysql" else ""
            admin.rows(
                f"CREATE TABLE failover_rows (request VARCHAR(60) NOT NULL){engine}"
            )
            if VENDOR == "postgresql":
                admin.rows(f"GRANT ALL ON failover_rows TO {APP_USER}")
        finally:
            admin.close()
    except BaseException:
        private.close()
        raise
    return private


def admin_settings(server: PrivateServer) -> dict[str, Any]:
    """The server's superuser, on the application's database."""
    if VENDOR == "postgresql":
        return dict(server.settings)
    return {**server.settings, "NAME": APP_DB}


def app_settings(server: PrivateServer, **overrides: Any) -> dict[str, Any]:
    """The application's login on the server, with ``overrides`` (HOST, PORT)."""
    return {
        **admin_settings(server),
        "USER": APP_USER,
        "PASSWORD": APP_PASSWORD,
        **overrides,
    }


def set_read_only(server: PrivateServer, on: bool) -> None:
    """Make the whole server refuse writes, or take them again, as a DBA does."""
    admin = Observer(**admin_settings(server))
    try:
        if VENDOR == "postgresql":
            # For every session, open ones included, from their next transaction.
            admin.rows("SET default_transaction_read_only = off")
            admin.rows(
                "ALTER SYSTEM SET default_transaction_read_only = on"
                if on
                else "ALTER SYSTEM RESET default_transaction_read_only"
            )
            admin.rows("SELECT pg_reload_conf()")
        else:
            admin.rows(f"SET GLOBAL read_only = {int(on)}")
    finally:
        admin.close()
    if VENDOR == "postgresql":
        # pg_reload_conf() only signals the postmaster. A new session sees
        # the new value once it has reloaded, and by then it has signalled
        # every session, which applies it before its next statement.
        wanted = "on" if on else "off"

        def new_sessions_see_it() -> bool:
            probe = Observer(**admin_settings(server))
            try:
                return bool(probe.value("SHOW default_transaction_read_only") == wanted)
            finally:
                probe.close()

        wait_until(
            new_sessions_see_it,
            f"default_transaction_read_only = {wanted} in a new session",
            timeout=10,
            interval=0.01,
        )


def rows_on(server: PrivateServer, requests: list[str]) -> set[str]:
    if not requests:
        return set()
    observer = Observer(**admin_settings(server))
    try:
        marks = ", ".join(["%s"] * len(requests))
        found = observer.rows(
            f"SELECT request FROM failover_rows WHERE request IN ({marks})", requests
        )
    finally:
        observer.close()
    return {row[0] for row in found}


def server_port(wrapper: Any) -> int:
    """Which server a Django connection is on (the port it listens on)."""
    sql = (
        "SELECT current_setting('port')" if VENDOR == "postgresql" else "SELECT @@port"
    )
    return int(query_value(wrapper, sql))


def write(wrapper: Any, request: str) -> None:
    """One request: a row written in a transaction of its own, committed."""
    try:
        wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:
            cursor.execute(WRITE, [request])
        wrapper.commit()
    finally:
        wrapper.close()


@dataclass
class Outcome:
    """One request of the load: whether it was acknowledged, when it ran."""

    ok: bool
    started: float
    ended: float
    request: str


def switchover_under_load(
    pool_alias: PoolAliasFactory,
    proxy: TcpProxy,
    old: PrivateServer,
    new: PrivateServer,
) -> tuple[list[Outcome], float, dict[str, int]]:
    """THREADS threads write through ``proxy``; then new connections reach
    ``new`` and ``old`` turns read-only. Every request's outcome, when the
    switch happened, and the pool's stats at the end."""
    alias = pool_alias(
        pool_size=THREADS, max_overflow=0, pre_ping=False,
        settings=app_settings(old, HOST="127.0.0.1", PORT=str(proxy.port)),
    )  # fmt: skip
    prefix = uuid.uuid4().hex[:8]
    stop = threading.Event()
    outcomes: list[Outcome] = []
    crashes: list[BaseException] = []

    def requests(thread: int) -> None:
        wrapper = alias.wrapper()
        number = 0
        while not stop.is_set():
            request, number = f"{prefix}-{thread}-{number}", number + 1
            started, ok = time.monotonic(), False
            try:
                write(wrapper, request)
                ok = True
            except DatabaseError:
                pass
            except BaseException as exc:  # anything else is a bug of ours
                crashes.append(exc)
                raise
            outcomes.append(Outcome(ok, started, time.monotonic(), request))
            time.sleep(0.002)

    with threads_running(partial(requests, n) for n in range(THREADS)):
        try:
            time.sleep(0.7)
            proxy.upstream = ("127.0.0.1", new.port)  # new connections: the new one
            switched = time.monotonic()
            set_read_only(old, True)
            time.sleep(2.0)
        finally:
            stop.set()
    assert not crashes
    return outcomes, switched, django_sapool.get_stats(alias.name)


class StatementCounter:
    """Statements (and pings) the application's account sends, server-side."""

    def __init__(self, server: PrivateServer) -> None:
        self.server = server
        self.admin = Observer(**admin_settings(server))
        if VENDOR == "postgresql":
            # Logged for the app's role only: the observer's are not counted.
            self.admin.rows(f"ALTER ROLE {APP_USER} SET log_statement = 'all'")

    def close(self) -> None:
        if VENDOR == "postgresql":
            self.admin.rows(f"ALTER ROLE {APP_USER} RESET log_statement")
        self.admin.close()

    def mark(self) -> int:
        if VENDOR == "postgresql":
            return Path(self.server.root / "log").stat().st_size
        return self._mysql_status()

    def since(self, mark: int) -> int:
        if VENDOR == "postgresql":
            time.sleep(0.2)  # the server's log is written asynchronously
            with open(self.server.root / "log", errors="replace") as log:
                log.seek(mark)
                return sum(1 for line in log if "LOG:  statement: " in line)
        # Minus the SHOW STATUS that read the counters at the mark.
        return self._mysql_status() - mark - 1

    def _mysql_status(self) -> int:
        # COM_PING is an admin command, not a question.
        counters = dict(
            self.admin.rows(
                "SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('Questions', 'Com_admin_commands')"
            )
        )
        return int(counters["Questions"]) + int(counters["Com_admin_commands"])


def restart_under_load(
    pool_alias: PoolAliasFactory, server: PrivateServer, *, pre_ping: bool, pause: bool
) -> tuple[list[Outcome], float, dict[str, int]]:
    """Run the load across a restart: outcomes, when the server was back, stats.

    The stats are the pool's at the end, with ``stale``: the connections it
    had open when the server went down. ``pause``: no requests while it is
    down, so every stale connection is still in the pool when it is back.
    """
    alias = pool_alias(
        pool_size=8, max_overflow=0, pre_ping=pre_ping, settings=server.settings
    )
    prefix = uuid.uuid4().hex[:8]
    stop, running = threading.Event(), threading.Event()
    running.set()
    outcomes: list[Outcome] = []
    crashes: list[BaseException] = []

    def requests(thread: int) -> None:
        wrapper = alias.wrapper()
        number = 0
        while running.wait() and not stop.is_set():
            request, number = f"{prefix}-{thread}-{number}", number + 1
            started, ok = time.monotonic(), False
            try:
                wrapper.set_autocommit(False)
                with wrapper.cursor() as cursor:
                    for part in (1, 2):
                        cursor.execute(
                            "INSERT INTO restart_rows (request, part) VALUES (%s, %s)",
                            [request, part],
                        )
                wrapper.commit()
                ok = True
            except DatabaseError:
                pass
            except BaseException as exc:  # anything else is a bug of ours
                crashes.append(exc)
                raise
            finally:
                wrapper.close()
            outcomes.append(Outcome(ok, started, time.monotonic(), request))
            time.sleep(0.002)

    with threads_running(functools.partial(requests, n) for n in range(8)):
        try:
            time.sleep(0.5)
            if pause:
                running.clear()
                time.sleep(0.1)  # requests under way end
            stale = django_sapool.get_stats(alias.name)["pool_size"]
            server.stop()
            time.sleep(0.5)  # down: requests meanwhile fail, quickly
            server.start()  # returns once the server accepts connections
            back = time.monotonic()
            running.set()
            time.sleep(1.0)
        finally:
            running.set()
            stop.set()
    assert not crashes
    return outcomes, back, {**django_sapool.get_stats(alias.name), "stale": stale}
