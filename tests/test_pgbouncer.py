"""Behind PgBouncer in transaction mode: what the server sees, and what must change.

Each test starts a private PgBouncer (tests/support/pgbouncer.py) in front of the test
server and points a pooled alias at it; the observer talks to the server
itself. In transaction mode PgBouncer lends a server connection for one
transaction at a time and, when several are idle, hands out the one released
last. Tests that need "our next statement runs on another server connection"
make that happen with ``another_client``: a second client that opens a
transaction right after ours, so it takes the server connection ours just used.
docs/pgbouncer.md states what these tests prove.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connections, transaction
from django.db.utils import load_backend

from tests.support.pgbouncer import PgBouncer, find_pgbouncer, running_pgbouncer
from tests.support.pool_alias import PoolAlias, PoolAliasFactory
from tests.support.server import (
    STOCK_ENGINE,
    Observer,
    Peak,
    backend_id,
    query_one,
    query_value,
    stock_settings,
)
from tests.support.waiting import threads_running, wait_until
from tests.testapp.models import Item

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

APP = f"sapool-pgbouncer-{os.getpid()}"  # ours alone, if runs share a server
SERVER_POOL = 3  # PgBouncer's default_pool_size in these tests


@pytest.fixture
def bouncer() -> Iterator[PgBouncer]:
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with running_pgbouncer("transaction", default_pool_size=SERVER_POOL) as running:
        yield running


@pytest.fixture
def behind(bouncer: PgBouncer, pool_alias: PoolAliasFactory) -> PoolAliasFactory:
    """``behind(settings=..., options=..., **pool)``: a pooled alias via PgBouncer."""

    def make(
        *,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **pool: Any,
    ) -> PoolAlias:
        address = {"HOST": bouncer.host, "PORT": bouncer.port}
        return pool_alias(
            settings={**address, **(settings or {})},
            options={"application_name": APP, **(options or {})},
            **pool,
        )

    return make


@contextlib.contextmanager
def another_client(bouncer: PgBouncer) -> Iterator[Any]:
    """A plain client of PgBouncer inside a transaction, holding a server
    connection: the one released last, which our connection just used."""
    backend = load_backend(STOCK_ENGINE)
    wrapper = backend.DatabaseWrapper(
        stock_settings(HOST=bouncer.host, PORT=bouncer.port), alias="other_client"
    )
    try:
        wrapper.ensure_connection()
        wrapper.set_autocommit(False)
        yield wrapper
    finally:
        if wrapper.connection is not None:
            wrapper.rollback()
        wrapper.close()


def server_backends(observer: Observer, bouncer: PgBouncer) -> list[tuple[Any, ...]]:
    """(pid, state, query) of the server sessions PgBouncer holds, per the server."""
    return observer.rows(
        "SELECT pid, state, query FROM pg_stat_activity WHERE pid = ANY(%s)",
        [sorted(bouncer.server_pids())],
    )


def clients(bouncer: PgBouncer, database: str) -> int:
    """Client connections PgBouncer has to ``database`` (the console excluded)."""
    return sum(1 for row in bouncer.show("CLIENTS") if row["database"] == database)


def test_many_client_connections_share_default_pool_size_server_sessions(
    behind: PoolAliasFactory, bouncer: PgBouncer, observer: Observer
) -> None:
    # 8 threads, each a Django connection from a pool of 2 + 6 overflow: 8
    # client connections to PgBouncer, at most SERVER_POOL server sessions.
    alias = behind(pool_size=2, max_overflow=6, timeout=30)
    database = alias.settings_dict["NAME"]
    threads = 8
    all_connected = threading.Barrier(threads + 1)
    counted = threading.Barrier(threads + 1)
    seen: set[int] = set()

    def count_servers(observer: Observer = observer) -> int:
        return int(
            observer.value(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [APP],
            )
        )

    def request_cycles() -> None:
        wrapper = alias.wrapper()
        try:
            wrapper.ensure_connection()
            all_connected.wait(30)
            counted.wait(30)
            for _ in range(25):
                seen.add(backend_id(wrapper))
                wrapper.close()
        finally:
            wrapper.close()

    servers = Peak()
    with (
        servers.watching(count_servers),
        threads_running([request_cycles] * threads) as errors,
    ):
        all_connected.wait(30)
        clients_at_once = clients(bouncer, database)
        servers_then = count_servers()
        counted.wait(30)
    assert errors == []
    assert clients_at_once == threads, "every thread holds a client connection"
    assert servers_then <= SERVER_POOL
    assert 1 <= len(seen) <= SERVER_POOL, seen
    assert seen <= bouncer.server_pids(), "PgBouncer keeps its server sessions"
    assert 1 <= servers.most <= SERVER_POOL, "counted on the server itself"
    # Our pool kept pool_size client connections and closed the overflow
    # (PgBouncer notices a client's disconnect a moment after it).
    wait_until(lambda: clients(bouncer, database) == 2, "2 client connections left")


def test_rollback_on_return_frees_the_server_session(
    behind: PoolAliasFactory, bouncer: PgBouncer, observer: Observer
) -> None:
    alias = behind(pool_size=1, max_overflow=0)  # reset_on_return="rollback"
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    wrapper.set_autocommit(False)
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) VALUES ('left open')")
    # An open transaction pins one server session to our client connection.
    assert [state for _, state, _ in server_backends(observer, bouncer)] == [
        "idle in transaction"
    ]
    wrapper.close()  # back to our pool: rolled back, the client connection kept
    states = {state for _, state, _ in server_backends(observer, bouncer)}
    assert states == {"idle"}, "no server session left idle in transaction"
    assert clients(bouncer, alias.settings_dict["NAME"]) == 1
    assert not Item.objects.filter(name="left open").exists()


@pytest.mark.parametrize(
    ("disable_server_side_cursors", "in_atomic", "breaks"),
    [(False, False, True), (True, False, False), (False, True, False)],
    ids=["server-side cursor", "DISABLE_SERVER_SIDE_CURSORS", "in atomic()"],
)
def test_iterator_needs_disable_server_side_cursors_or_atomic(
    behind: PoolAliasFactory,
    bouncer: PgBouncer,
    disable_server_side_cursors: bool,
    in_atomic: bool,
    breaks: bool,
) -> None:
    Item.objects.bulk_create(Item(name=f"item {n}") for n in range(6))
    alias = behind(
        settings={"DISABLE_SERVER_SIDE_CURSORS": disable_server_side_cursors}
    )
    # The ORM finds it under its alias; not being in settings, Django's test
    # case allows it as a dynamically created connection.
    wrapper = alias.wrapper()
    connections[alias.name] = wrapper
    block = (
        transaction.atomic(using=alias.name) if in_atomic else contextlib.nullcontext()
    )
    try:
        with block:
            rows = Item.objects.using(alias.name).order_by("pk").iterator(2)
            names = [next(rows).name]
            with another_client(bouncer) as other:
                # Takes the server session our cursor is in, unless our open
                # transaction holds it (atomic).
                query_one(other, "SELECT 1")
                if not breaks:
                    names += [item.name for item in rows]
                    assert names == [f"item {n}" for n in range(6)]
                    return
                # In autocommit Django declares a WITH HOLD cursor; the next
                # FETCH runs in another server session, which has none.
                # (psycopg 3 raises its own error, from closing the cursor.)
                errors = (DatabaseError, wrapper.Database.Error)
                with pytest.raises(errors, match=r"cursor .* does not exist"):
                    list(rows)
                with warnings.catch_warnings():
                    # psycopg 3 could not close the cursor: it warns when freed.
                    warnings.simplefilter("ignore", ResourceWarning)
                    del rows
                    gc.collect()
    finally:
        del connections[alias.name]


@pytest.mark.psycopg3
@pytest.mark.parametrize(
    ("options", "breaks"),
    [
        # Django's defaults: client-side binding, and prepare_threshold=None.
        ({}, False),
        # Client-side binding cursors never prepare, whatever the threshold.
        ({"prepare_threshold": 5}, False),
        ({"server_side_binding": True}, False),
        # Both opted into: statements prepared in one server session only.
        ({"server_side_binding": True, "prepare_threshold": 5}, True),
    ],
    ids=["default", "threshold", "server-binding", "server-binding+threshold"],
)
def test_psycopg3_prepared_statements(
    behind: PoolAliasFactory,
    bouncer: PgBouncer,
    options: dict[str, Any],
    breaks: bool,
) -> None:
    wrapper = behind(pool_size=1, max_overflow=0, options=options).wrapper()
    query = "SELECT %s::int + 1, pg_backend_pid()"
    for value in range(8):  # psycopg prepares after prepare_threshold runs
        last_server = query_one(wrapper, query, [value])[1]
    with another_client(bouncer) as other:
        assert query_value(other, "SELECT pg_backend_pid()") == last_server
        if breaks:
            with pytest.raises(DatabaseError, match=r'statement "_pg3_\d+" does not'):
                query_one(wrapper, query, [41])
        else:
            assert query_value(wrapper, query, [41]) == 42
    wrapper.close()


def test_session_state_stays_on_the_server_session_not_the_client(
    behind: PoolAliasFactory, bouncer: PgBouncer, observer: Observer
) -> None:
    observer.rows(
        "DO $$ BEGIN CREATE ROLE sapool_pgbouncer_role NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    # Django's connection setup runs SET ROLE (assume_role) and SET TIME ZONE
    # once, in whichever server session serves that first transaction.
    alias = behind(
        pool_size=1,
        max_overflow=0,
        settings={"TIME_ZONE": "Asia/Tokyo"},
        options={"assume_role": "sapool_pgbouncer_role"},
    )
    wrapper = alias.wrapper()
    with wrapper.cursor() as cursor:
        cursor.execute("SET statement_timeout = '123s'")
    first_server = query_value(wrapper, "SELECT pg_backend_pid()")
    with another_client(bouncer) as other:
        # Another client now runs in that session: as our role, with our SET.
        server, user, timeout, zone = query_one(
            other,
            "SELECT pg_backend_pid(), current_user, "
            "current_setting('statement_timeout'), current_setting('TimeZone')",
        )
        assert server == first_server
        assert (user, timeout) == ("sapool_pgbouncer_role", "123s"), "leaked"
        assert zone != "Asia/Tokyo", "PgBouncer restores each client's TimeZone"
        # Our next transaction runs elsewhere: without them.
        server, user, timeout, zone = query_one(
            wrapper,
            "SELECT pg_backend_pid(), current_user, "
            "current_setting('statement_timeout'), current_setting('TimeZone')",
        )
        assert server != first_server
        assert (user, timeout) == (alias.settings_dict["USER"], "0"), "lost"
        assert zone == "Asia/Tokyo", "TimeZone follows the client"
    wrapper.close()


def test_discard_resets_some_other_server_session(
    behind: PoolAliasFactory, bouncer: PgBouncer, observer: Observer
) -> None:
    alias = behind(pool_size=1, max_overflow=0, reset_on_return="discard")
    wrapper = alias.wrapper()
    with wrapper.cursor() as cursor:
        cursor.execute("SET statement_timeout = '123s'")
    dirty = query_value(wrapper, "SELECT pg_backend_pid()")
    with another_client(bouncer) as other:
        assert query_value(other, "SELECT pg_backend_pid()") == dirty
        wrapper.close()  # DISCARD ALL: in whichever session PgBouncer lends now
        discarded = {
            pid
            for pid, _, query in server_backends(observer, bouncer)
            if query == "DISCARD ALL"
        }
        assert discarded, "the pool sent DISCARD ALL"
        assert dirty not in discarded
        # The session our borrower dirtied is untouched, and serves others.
        assert query_value(other, "SHOW statement_timeout") == "123s"
