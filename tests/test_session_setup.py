"""Django's per-connection setup: once per physical connection, again after a reset.

A pooled request must cost the server no more round trips than a persistent
connection: nothing at checkout, nothing at checkin when no transaction is
open; exactly one ping with ``pre_ping``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError
from django.db.utils import load_backend

from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import (
    STOCK_ENGINE,
    Observer,
    backend_id,
    query_one,
    query_value,
    stock_settings,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def role(observer: Observer) -> str:
    name = "sapool_test_role"
    observer.rows(
        "DO $$ BEGIN CREATE ROLE sapool_test_role NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    return name


@pytest.mark.session_bound(
    reason=(
        "reads one server session's last statement; and assume_role's SET ROLE "
        "would stay on a server session that then serves other clients"
    )
)
@pytest.mark.postgresql
@pytest.mark.parametrize(("pre_ping", "ping"), [(False, None), (True, "ping")])
def test_postgresql_checkout_and_checkin_send_nothing_else(
    pool_alias: PoolAliasFactory,
    observer: Observer,
    role: str,
    pre_ping: bool,
    ping: str | None,
) -> None:
    # assume_role makes Django's setup cost a round trip (SET ROLE): it must
    # run when the connection is opened, not at every checkout.
    alias = pool_alias(
        pool_size=1, max_overflow=0, pre_ping=pre_ping, options={"assume_role": role}
    )
    wrapper = alias.wrapper()
    session = backend_id(wrapper)  # the first checkout sets the session up
    wrapper.close()
    ping_sql = ";" if wrapper.Database.__name__ == "psycopg" else "SELECT 1"
    for cycle in range(5):
        wrapper.ensure_connection()
        # What the server ran last, right after checkout, before any query:
        expected = ping_sql if ping else f"SELECT 'cycle {cycle - 1}'"
        if cycle or ping:
            assert observer.last_statement(session) == expected
        query_value(wrapper, f"SELECT 'cycle {cycle}'")
        wrapper.close()
        assert observer.last_statement(session) == f"SELECT 'cycle {cycle}'"


@pytest.mark.mysql
@pytest.mark.parametrize(("pre_ping", "extra"), [(False, 0), (True, 1)])
def test_mysql_request_costs_one_round_trip_per_query(
    pool_alias: PoolAliasFactory, pre_ping: bool, extra: int
) -> None:
    wrapper = pool_alias(pool_size=1, max_overflow=0, pre_ping=pre_ping).wrapper()
    backend_id(wrapper)  # the first checkout sets the session up
    before = session_round_trips(wrapper)
    wrapper.close()
    cycles = 10
    for _ in range(cycles):
        backend_id(wrapper)
        wrapper.close()
    after = session_round_trips(wrapper)  # one more checkout, and the read
    wrapper.close()
    # The server's own counters for this one session (the pool has one), so
    # other clients of the server do not count: per checkout the query and
    # any ping, and the final read itself.
    assert after - before == (cycles + 1) * (1 + extra)


def session_round_trips(wrapper: Any) -> int:
    """MySQL: statements (Questions) and pings (Com_admin_commands) so far in
    this session, as the server counts them; the read itself included."""
    with wrapper.cursor() as cursor:
        cursor.execute(
            "SHOW SESSION STATUS "
            "WHERE Variable_name IN ('Questions', 'Com_admin_commands')"
        )
        return sum(int(value) for _, value in cursor.fetchall())


@pytest.mark.session_bound(
    reason=("as above, and DISCARD ALL must run in the session it resets")
)
@pytest.mark.postgresql
def test_discard_reapplies_time_zone_role_and_isolation_level(
    pool_alias: PoolAliasFactory, observer: Observer, role: str
) -> None:
    from django.db.backends.postgresql.psycopg_any import IsolationLevel

    alias = pool_alias(
        pool_size=1,
        max_overflow=0,
        reset_on_return="discard",
        settings={"TIME_ZONE": "Asia/Tokyo"},
        options={"assume_role": role, "isolation_level": IsolationLevel.SERIALIZABLE},
    )
    first = alias.wrapper()
    session = backend_id(first)
    first.close()
    assert observer.last_statement(session) == "DISCARD ALL"
    for wrapper in (first, alias.wrapper()):
        assert backend_id(wrapper) == session
        assert query_value(wrapper, "SHOW TimeZone") == "Asia/Tokyo"
        assert query_value(wrapper, "SELECT current_user") == role
        wrapper.set_autocommit(False)
        assert query_value(wrapper, "SHOW transaction_isolation") == "serializable"
        wrapper.rollback()
        wrapper.set_autocommit(True)
        assert wrapper.isolation_level == IsolationLevel.SERIALIZABLE
        wrapper.close()


@pytest.mark.mysql
def test_discard_reapplies_isolation_level_and_init_command(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(
        pool_size=1,
        max_overflow=0,
        reset_on_return="discard",
        options={
            "isolation_level": "serializable",
            "init_command": "SET @sapool_init = 'ran'",
        },
    )
    first = alias.wrapper()
    session = backend_id(first)
    charset = query_value(
        first, "SELECT @@character_set_client"
    )  # utf8mb4; utf8 on 4.2
    with first.cursor() as cursor:
        cursor.execute("SET @sapool_init = 'changed by the borrower'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
    first.close()
    nxt = alias.wrapper()
    assert backend_id(nxt) == session
    assert query_value(nxt, "SELECT @@SESSION.tx_isolation") == "SERIALIZABLE"
    assert query_value(nxt, "SELECT CAST(@sapool_init AS CHAR)") == "ran"
    assert query_value(nxt, "SELECT @@character_set_client") == charset


# What mysqlclient and Django set per session from the settings, as the server
# reports it (MySQL 8 names the isolation variable transaction_isolation).
SESSION_VARIABLES = (
    "sql_mode",
    "collation_connection",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "tx_isolation",
    "transaction_isolation",
    "autocommit",
)


def session_variables(wrapper: Any) -> dict[str, str]:
    names = ", ".join(f"'{name}'" for name in SESSION_VARIABLES)
    with wrapper.cursor() as cursor:
        cursor.execute(f"SHOW SESSION VARIABLES WHERE Variable_name IN ({names})")
        return {name.lower(): value for name, value in cursor.fetchall()}


def round_trip(wrapper: Any, text: str) -> tuple[str, int]:
    """The text as the server gives it back, and its length as the server counts."""
    value, length = query_one(wrapper, "SELECT %s, CHAR_LENGTH(%s)", [text, text])
    return value, int(length)


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("options", "settings"),
    [
        pytest.param({}, {}, id="defaults"),
        pytest.param({"sql_mode": "ANSI_QUOTES,STRICT_ALL_TABLES"}, {}, id="sql_mode"),
        pytest.param(
            {"charset": "utf8mb4", "collation": "utf8mb4_bin"}, {}, id="collation"
        ),
        pytest.param({"charset": "latin1"}, {}, id="charset"),
        pytest.param({"isolation_level": "serializable"}, {}, id="isolation_level"),
        pytest.param({}, {"AUTOCOMMIT": False}, id="AUTOCOMMIT=False"),
        # At connect the driver sets sql_mode after running init_command.
        pytest.param(
            {
                "init_command": "SET SESSION sql_mode = 'ANSI'",
                "sql_mode": "TRADITIONAL",
            },
            {},
            id="init_command,sql_mode",
        ),
    ],
)
def test_mysql_discard_restores_the_session_a_new_connection_has(
    pool_alias: PoolAliasFactory, options: dict[str, Any], settings: dict[str, Any]
) -> None:
    # Differential: Django's stock backend, a new connection, same settings.
    stock = load_backend(STOCK_ENGINE).DatabaseWrapper(
        stock_settings(OPTIONS=dict(options), **settings), alias="stock"
    )
    expected = session_variables(stock)
    # Django 4.2 connects with utf8 (utf8mb3): what the server gives back for
    # text it cannot hold is the stock connection's answer too.
    text = "Grüße, déjà vu" if options.get("charset") == "latin1" else "Grüße ✓ 東京 🐍"
    expected_text = round_trip(stock, text)
    stock.close()
    alias = pool_alias(
        pool_size=1,
        max_overflow=0,
        reset_on_return="discard",
        options=options,
        settings=settings,
    )
    first = alias.wrapper()
    session = backend_id(first)
    assert session_variables(first) == expected, "a new pooled connection"
    with first.cursor() as cursor:  # a borrower changes its session
        cursor.execute("SET NAMES latin1 COLLATE latin1_general_ci, sql_mode = ''")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
    first.rollback()
    first.close()
    nxt = alias.wrapper()
    assert backend_id(nxt) == session, "reset, not reopened"
    assert session_variables(nxt) == expected
    assert round_trip(nxt, text) == expected_text
    nxt.close()


@pytest.mark.session_bound(reason="checks the borrower got the same server session")
@pytest.mark.postgresql
def test_isolation_level_reaches_every_borrower(pool_alias: PoolAliasFactory) -> None:
    from django.db.backends.postgresql.psycopg_any import IsolationLevel

    alias = pool_alias(
        pool_size=1,
        max_overflow=0,
        options={"isolation_level": IsolationLevel.REPEATABLE_READ},
    )
    opener = alias.wrapper()
    session = backend_id(opener)
    opener.close()
    borrower = alias.wrapper()  # never opened a connection itself
    assert backend_id(borrower) == session
    assert borrower.isolation_level == IsolationLevel.REPEATABLE_READ
    borrower.set_autocommit(False)
    assert query_value(borrower, "SHOW transaction_isolation") == "repeatable read"
    borrower.rollback()


@pytest.mark.session_bound(
    reason=("prepared statements exist in one server session only")
)
@pytest.mark.psycopg3
def test_discard_with_psycopg3_prepared_statements(
    pool_alias: PoolAliasFactory,
) -> None:
    # psycopg 3 caches prepared statements client-side; DISCARD ALL drops them
    # on the server. With server-side binding and prepare_threshold=0 every
    # query is prepared; they must keep working across many resets.
    alias = pool_alias(
        pool_size=1,
        max_overflow=0,
        reset_on_return="discard",
        options={"server_side_binding": True, "prepare_threshold": 0},
    )
    wrapper = alias.wrapper()
    for value in range(12):
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT %s::int + 1", [value])
            assert cursor.fetchone()[0] == value + 1
        wrapper.close()


@pytest.mark.mysql
def test_discard_needs_no_password(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # COM_RESET_CONNECTION keeps the authenticated session; COM_CHANGE_USER
    # would re-authenticate. The server's Connections counter must not move.
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return="discard")
    wrapper = alias.wrapper()
    backend_id(wrapper)
    wrapper.close()
    before = observer.connections_so_far()
    for _ in range(5):
        backend_id(wrapper)
        wrapper.close()
    assert observer.connections_so_far() == before


@pytest.mark.session_bound(
    reason=("tells 'kept' by the server session (see test_reset.py)")
)
def test_failed_query_does_not_cost_the_connection(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0)
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    with pytest.raises(DatabaseError), wrapper.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert wrapper.errors_occurred
    wrapper.close()
    assert backend_id(alias.wrapper()) == session, "is_usable() said yes: kept"
