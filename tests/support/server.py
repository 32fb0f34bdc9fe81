"""Watch the database server directly, not through the pool under test.

The observer is a plain, unpooled connection made by Django's stock backend.
Tests assert on what it reports: server session ids, who is alive, who sits
idle in a transaction, what each session ran last, server counters.

Behind a proxy (python -m tests.support.behind_pgbouncer puts PgBouncer in front of
PostgreSQL), SAPOOL_OBSERVER_PG_HOST and SAPOOL_OBSERVER_PG_PORT point the
observer at the server itself: what the proxy reports is not what the server
sees.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import connections
from django.db.utils import load_backend

from tests import settings as test_settings
from tests.support.waiting import wait_until

VENDOR = test_settings.VENDOR
STOCK_ENGINE = {
    "postgresql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
}[VENDOR]
_observer_ids = itertools.count()


def backend_id_sql() -> str:
    """SQL returning the server's id for the session that runs it."""
    return (
        "SELECT pg_backend_pid()"
        if VENDOR == "postgresql"
        else "SELECT CONNECTION_ID()"
    )


def query_one(wrapper: Any, sql: str, params: Iterable[Any] | None = None) -> Any:
    """The first row ``sql`` returns on a Django connection (opens it if needed)."""
    with wrapper.cursor() as cursor:
        cursor.execute(sql, None if params is None else list(params))
        return cursor.fetchone()


def query_value(wrapper: Any, sql: str, params: Iterable[Any] | None = None) -> Any:
    """The first column of the first row ``sql`` returns."""
    return query_one(wrapper, sql, params)[0]


def backend_id(wrapper: Any) -> int:
    """The server session id behind a Django connection (opens it if needed)."""
    return int(query_value(wrapper, backend_id_sql()))


def stock_settings(**overrides: Any) -> dict[str, Any]:
    """The test database's settings for Django's own (unpooled) backend."""
    settings_dict = copy.deepcopy(connections["default"].settings_dict)
    settings_dict["ENGINE"] = STOCK_ENGINE
    settings_dict["OPTIONS"] = {}
    settings_dict.update(overrides)
    return settings_dict


def observer_address() -> dict[str, str]:
    """HOST/PORT overrides that bypass a proxy in front of PostgreSQL, if any."""
    if VENDOR != "postgresql":
        return {}
    address = {
        "HOST": os.environ.get("SAPOOL_OBSERVER_PG_HOST", ""),
        "PORT": os.environ.get("SAPOOL_OBSERVER_PG_PORT", ""),
    }
    return {key: value for key, value in address.items() if value}


class Observer:
    """An unpooled connection that reports what the server sees."""

    def __init__(self, **settings: Any) -> None:
        """``settings`` override the test database's (another server, say)."""
        backend = load_backend(STOCK_ENGINE)
        self.wrapper = backend.DatabaseWrapper(
            stock_settings(**(settings or observer_address())),
            alias=f"observer{next(_observer_ids)}",
        )
        self.own_id = backend_id(self.wrapper)

    def close(self) -> None:
        self.wrapper.close()

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.wrapper.cursor() as cursor:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall()) if cursor.description else []

    def value(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.rows(sql, params)[0][0]

    def alive(self, ids: Iterable[int]) -> set[int]:
        """Which of these server sessions still exist."""
        ids = list(ids)
        if not ids:
            return set()
        if VENDOR == "postgresql":
            sql = "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)"
            return {row[0] for row in self.rows(sql, [ids])}
        marks = ", ".join(["%s"] * len(ids))
        sql = f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})"
        return {int(row[0]) for row in self.rows(sql, ids)}

    def sessions_on_database(self) -> set[int]:
        """Server sessions connected to the test database, the observer excluded."""
        name = self.wrapper.settings_dict["NAME"]
        if VENDOR == "postgresql":
            sql = (
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s "
                "AND backend_type = 'client backend'"
            )
        else:
            sql = (
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> %s"
            )
        return {int(row[0]) for row in self.rows(sql, [name, self.own_id])}

    def idle_in_transaction(self, ids: Iterable[int]) -> set[int]:
        """Which of these sessions have a transaction open while idle."""
        ids = list(ids)
        if not ids:
            return set()
        if VENDOR == "postgresql":
            sql = (
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) "
                "AND state LIKE 'idle in transaction%%'"
            )
            return {row[0] for row in self.rows(sql, [ids])}
        # Not information_schema.INNODB_TRX: InnoDB refreshes that copy only
        # once nobody has read it for 0.1 s, so a reader that polls (or another
        # test run on the server) keeps seeing transactions as they were.
        # The monitor's list is read under InnoDB's lock, every time.
        status = str(self.rows("SHOW ENGINE INNODB STATUS")[0][2])
        in_transaction = set()
        for entry in status.split("\n---TRANSACTION ")[1:]:
            header = entry.split("\n", 1)[0]
            thread = re.search(r"(?:MySQL|MariaDB) thread id (\d+),", entry)
            if thread and "not started" not in header:
                in_transaction.add(int(thread.group(1)))
        return in_transaction & set(ids)

    def kill(self, backend: int) -> None:
        """Terminate a server session, as an administrator or a failover would."""
        if VENDOR == "postgresql":
            self.rows("SELECT pg_terminate_backend(%s)", [backend])
        else:
            self.rows(f"KILL {int(backend)}")
        self.wait_gone([backend])

    def wait_gone(self, ids: Iterable[int], timeout: float = 10.0) -> None:
        ids = list(ids)
        wait_until(lambda: not self.alive(ids), f"sessions {ids} end", timeout=timeout)

    def last_statement(self, backend: int) -> str:
        """PostgreSQL: the last statement the session ran, as the server saw it."""
        assert VENDOR == "postgresql"
        return str(
            self.value("SELECT query FROM pg_stat_activity WHERE pid = %s", [backend])
        )

    def connections_so_far(self) -> int:
        """MySQL: connection attempts the server has accepted (Connections)."""
        assert VENDOR == "mysql"
        return int(self.rows("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])


class Peak:
    """The most server sessions seen at once.

    ``record()`` what a test counted itself, or ``watching()`` a count taken
    by a thread of its own, on an observer of its own, until the block ends.
    """

    def __init__(self) -> None:
        self.most = 0

    def record(self, count: int) -> int:
        self.most = max(self.most, count)
        return count

    @contextlib.contextmanager
    def watching(
        self,
        count: Callable[[Observer], int],
        interval: float = 0.005,
        settings: dict[str, Any] | None = None,
    ) -> Iterator[Peak]:
        """``settings``: the observer's, for another server (a private one)."""
        done = threading.Event()

        def watch() -> None:
            watcher = Observer(**(settings or {}))
            try:
                while not done.is_set():
                    self.record(count(watcher))
                    done.wait(interval)
            finally:
                watcher.close()

        thread = threading.Thread(target=watch)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()


def create_login(observer: Observer, user: str, password: str) -> dict[str, str]:
    """A login with all rights on the observer's database; its USER and PASSWORD.

    Made if missing, its password set either way. A MySQL user is
    ``'user'@'HOST'``, HOST the observer's (the clients' too).
    """
    database = observer.wrapper.settings_dict["NAME"]
    if VENDOR == "postgresql":
        observer.rows(
            f"DO $$ BEGIN CREATE ROLE {user} LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        observer.rows(f"ALTER ROLE {user} PASSWORD '{password}'")
        observer.rows(f'GRANT ALL ON DATABASE "{database}" TO {user}')
    else:
        account = _mysql_account(observer, user)
        observer.rows(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'")
        observer.rows(f"ALTER USER {account} IDENTIFIED BY '{password}'")
        observer.rows(f"GRANT ALL ON `{database}`.* TO {account}")
    return {"USER": user, "PASSWORD": password}


def _mysql_account(observer: Observer, user: str) -> str:
    host = observer.wrapper.settings_dict["HOST"] or "localhost"
    return f"'{user}'@'{host}'"


@contextlib.contextmanager
def server_login(
    observer: Observer, user: str, password: str, *, drop: bool
) -> Iterator[dict[str, str]]:
    """A login of its own on the test database (``create_login``); yields its
    USER and PASSWORD.

    On exit its rights are revoked; a MySQL user is dropped, a PostgreSQL
    role only with ``drop`` (a role name shared by runs on one server stays,
    so as not to drop it from under another run).
    """
    database = observer.wrapper.settings_dict["NAME"]
    account = _mysql_account(observer, user)
    login = create_login(observer, user, password)
    try:
        yield login
    finally:
        if VENDOR == "postgresql":
            observer.rows(f'REVOKE ALL ON DATABASE "{database}" FROM {user}')
            if drop:
                observer.rows(f"DROP ROLE IF EXISTS {user}")
        else:
            observer.rows(f"DROP USER IF EXISTS {account}")
