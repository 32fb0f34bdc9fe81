"""What one borrower leaves behind, and what the next one (and the server) sees.

One borrower sets a session variable, creates a temporary table, takes an
advisory (PostgreSQL) or user (MySQL) lock and leaves a transaction open with
an inserted row, then gives the connection back. The documented outcome:

=============  ============  ========  ==========  ======  ===============
reset          same session  variable  temp table  lock    row
=============  ============  ========  ==========  ======  ===============
"rollback"     yes           kept      kept        kept    rolled back
"commit"       yes           kept      kept        kept    committed
"discard"      yes           reset     dropped     freed   rolled back
None           no: closed    -         -           freed   rolled back
=============  ============  ========  ==========  ======  ===============

In every mode no server session is left idle in a transaction.
"""

from __future__ import annotations

import copy
import gc
import os
import threading
from typing import Any

import pytest
from django.db import DatabaseError
from django.db.utils import load_backend

from django_sapool._reaper import reaper
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import VENDOR, Observer, backend_id, query_value

pytestmark = pytest.mark.django_db(transaction=True)

ROW = "left-open-by-borrower"
# Locks are server-wide: a key of this run's own, so concurrent runs do not meet.
LOCK_KEY = os.getpid()

if VENDOR == "postgresql":
    MESS = [
        "SET statement_timeout = '123s'",
        "CREATE TEMPORARY TABLE sapool_scratch (x int)",
        f"SELECT pg_advisory_lock(4242, {LOCK_KEY})",
    ]
    READ_VARIABLE = "SHOW statement_timeout"
    VARIABLE_SET, VARIABLE_DEFAULT = "123s", "0"
    TEMP_TABLE_EXISTS = "SELECT to_regclass('sapool_scratch') IS NOT NULL"
    LOCK_HELD = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        f"AND classid = 4242 AND objid = {LOCK_KEY} AND granted"
    )
else:
    MESS = [
        "SET @sapool_variable = 'set'",
        "CREATE TEMPORARY TABLE sapool_scratch (x int)",
        f"SELECT GET_LOCK('sapool_lock_{LOCK_KEY}', 0)",
    ]
    READ_VARIABLE = "SELECT CAST(COALESCE(@sapool_variable, 'unset') AS CHAR)"
    VARIABLE_SET, VARIABLE_DEFAULT = "set", "unset"
    # information_schema.TEMPORARY_TABLES needs MariaDB 11.2; ask the table itself.
    TEMP_TABLE_EXISTS = "SELECT COUNT(*) + 1 FROM sapool_scratch"
    LOCK_HELD = f"SELECT IS_USED_LOCK('sapool_lock_{LOCK_KEY}') IS NOT NULL"


def temp_table_exists(wrapper: Any) -> bool:
    try:
        return bool(query_value(wrapper, TEMP_TABLE_EXISTS))
    except DatabaseError:
        return False


def leave_a_mess(wrapper: Any) -> int:
    """Borrow, dirty the session, leave a transaction open, give it back."""
    session = backend_id(wrapper)
    with wrapper.cursor() as cursor:
        for statement in MESS:
            cursor.execute(statement)
    wrapper.set_autocommit(False)
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) VALUES (%s)", [ROW])
    wrapper.close()
    return session


def row_committed(observer: Observer) -> bool:
    return bool(
        observer.value("SELECT COUNT(*) FROM testapp_item WHERE name = %s", [ROW])
    )


@pytest.mark.session_bound(
    reason=(
        "what is kept lives in a server session, which in transaction mode "
        "serves other clients between our transactions"
    )
)
@pytest.mark.parametrize(
    ("mode", "same_session", "variable_kept", "temp_kept", "lock_kept", "committed"),
    [
        ("rollback", True, True, True, True, False),
        ("commit", True, True, True, True, True),
        ("discard", True, False, False, False, False),
        (None, False, False, False, False, False),
    ],
)
def test_what_the_next_borrower_sees(
    pool_alias: PoolAliasFactory,
    observer: Observer,
    mode: str | None,
    same_session: bool,
    variable_kept: bool,
    temp_kept: bool,
    lock_kept: bool,
    committed: bool,
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return=mode)
    first = leave_a_mess(alias.wrapper())
    if not same_session:
        observer.wait_gone([first])  # closed: the server ends it shortly after
    assert observer.idle_in_transaction([first]) == set()

    nxt = alias.wrapper()
    assert (backend_id(nxt) == first) is same_session
    assert query_value(nxt, READ_VARIABLE) == (
        VARIABLE_SET if variable_kept else VARIABLE_DEFAULT
    )
    assert temp_table_exists(nxt) is temp_kept
    assert bool(observer.value(LOCK_HELD)) is lock_kept
    assert row_committed(observer) is committed
    nxt.close()
    assert observer.idle_in_transaction([first, backend_id(nxt)]) == set()


def test_a_raw_begin_in_autocommit_is_rolled_back(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # psycopg2's rollback() does nothing in autocommit mode; the pool must notice.
    wrapper = pool_alias(pool_size=1, max_overflow=0).wrapper()
    session = backend_id(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO testapp_item (name) VALUES (%s)", [ROW])
    wrapper.close()
    assert observer.idle_in_transaction([session]) == set()
    assert not row_committed(observer)
    assert observer.alive([session]) == {session}, "rolled back, not discarded"


@pytest.mark.session_bound(
    reason=(
        "tells 'kept' by the server session, which in transaction mode may "
        "differ between two transactions of one connection"
    )
)
def test_clean_connection_with_no_reset_is_kept(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return=None)
    first = alias.wrapper()
    session = backend_id(first)
    first.close()
    assert backend_id(alias.wrapper()) == session


@pytest.mark.session_bound(
    reason=(
        "tells 'reset and pooled again' by the server session, which in "
        "transaction mode may differ between two transactions of one connection"
    )
)
def test_a_vanished_borrowers_transaction_is_rolled_back(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # A thread that ends holding a connection in a transaction: when the
    # garbage collector returns the connection, the transaction must end then
    # (it may hold locks), not when someone next borrows the connection. The
    # collector may run in any thread, so the connection is closed by the
    # pool's reaper thread, as Django's stock backend would close it, and its
    # slot is free at once.
    alias = pool_alias(pool_size=1, max_overflow=0)
    sessions: list[int] = []

    def borrower() -> None:
        local = threading.local()  # the only reference, as in Django
        backend = load_backend(alias.settings_dict["ENGINE"])
        local.wrapper = backend.DatabaseWrapper(
            copy.deepcopy(alias.settings_dict), alias.name
        )
        sessions.append(backend_id(local.wrapper))
        local.wrapper.set_autocommit(False)
        with local.wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO testapp_item (name) VALUES (%s)", [ROW])

    thread = threading.Thread(target=borrower)
    thread.start()
    thread.join()
    gc.collect()
    reaper.wait_idle()
    observer.wait_gone(sessions)
    assert not row_committed(observer)
    assert backend_id(alias.wrapper()) != sessions[0], "a new connection in the slot"
