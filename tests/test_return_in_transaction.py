"""No connection is ever pooled inside a transaction.

A borrower can give a connection back with a transaction open in several ways
Django allows: autocommit off and a write, autocommit off and a first
statement that failed (on MySQL after InnoDB locked the row), a raw
``START TRANSACTION`` in autocommit mode, or ``close()`` inside ``atomic()``
with a savepoint open. In every reset mode the server must then show the
session out of any transaction and the row free for another session to lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, transaction

from tests.support.pool_alias import PoolAliasFactory, registered
from tests.support.server import VENDOR, Observer, backend_id
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROW = "locked-by-borrower"
WRITE = "UPDATE testapp_item SET name = %s WHERE name = %s"
WRITE_PARAMS = [ROW + "-renamed", ROW]
# Fails on every row (the id overflows a signed bigint) after the row is read
# for update: InnoDB holds the row lock although the statement failed.
FAILING_WRITE = "UPDATE testapp_item SET id = id + 9223372036854775807 WHERE name = %s"
SHORT_LOCK_WAIT = (
    "SET SESSION innodb_lock_wait_timeout = 1"
    if VENDOR == "mysql"
    else "SET lock_timeout = '1s'"
)


def execute(wrapper: Any, sql: str, params: list[Any] | None = None) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute(sql, params)


def fail_first_statement(wrapper: Any) -> None:
    with pytest.raises(DatabaseError):
        execute(wrapper, FAILING_WRITE, [ROW])


def write_with_autocommit_off(wrapper: Any) -> None:
    wrapper.set_autocommit(False)
    execute(wrapper, WRITE, WRITE_PARAMS)
    wrapper.close()


def fail_with_autocommit_off(wrapper: Any) -> None:
    wrapper.set_autocommit(False)
    fail_first_statement(wrapper)
    wrapper.close()


def raw_start_transaction(wrapper: Any) -> None:
    execute(wrapper, "START TRANSACTION")
    execute(wrapper, WRITE, WRITE_PARAMS)
    wrapper.close()


def raw_start_transaction_then_fail(wrapper: Any) -> None:
    execute(wrapper, "START TRANSACTION")
    fail_first_statement(wrapper)
    wrapper.close()


def close_in_atomic_savepoint(wrapper: Any) -> None:
    with registered(wrapper), transaction.atomic(using=wrapper.alias):
        execute(wrapper, WRITE, WRITE_PARAMS)
        with transaction.atomic(using=wrapper.alias):  # a savepoint
            execute(wrapper, "SELECT id FROM testapp_item FOR UPDATE")
            wrapper.close()


WAYS: dict[str, Callable[[Any], None]] = {
    "autocommit off, a write": write_with_autocommit_off,
    "autocommit off, a failed first statement": fail_with_autocommit_off,
    "raw START TRANSACTION, a write": raw_start_transaction,
    "raw START TRANSACTION, a failed statement": raw_start_transaction_then_fail,
    "close() inside atomic() with a savepoint": close_in_atomic_savepoint,
}


def insert_row(observer: Observer) -> int:
    observer.rows("INSERT INTO testapp_item (name) VALUES (%s)", [ROW])
    return int(observer.value("SELECT id FROM testapp_item WHERE name = %s", [ROW]))


def lock_error(observer: Observer, row_id: int) -> str | None:
    """Why another session cannot lock the row within a second; None if it can."""
    observer.rows(SHORT_LOCK_WAIT)
    try:
        observer.rows("SELECT id FROM testapp_item WHERE id = %s FOR UPDATE", [row_id])
    except DatabaseError as exc:
        return str(exc)
    return None


def no_transaction(observer: Observer, session: int, *, closing: bool) -> None:
    """The server session does not sit idle in a transaction.

    ``closing``: the pool closed the connection; the server ends the session
    (and its transaction) shortly after, so allow it a few seconds.
    """
    wait_until(
        lambda: not observer.idle_in_transaction([session]),
        f"session {session} leaves its transaction",
        timeout=5.0 if closing else 0.0,
    )


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("mode", ["rollback", "commit", "discard", None])
def test_no_connection_is_pooled_inside_a_transaction(
    pool_alias: PoolAliasFactory, observer: Observer, mode: str | None, way: str
) -> None:
    row_id = insert_row(observer)
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return=mode)
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    WAYS[way](wrapper)
    no_transaction(observer, session, closing=mode is None)
    assert lock_error(observer, row_id) is None
    # The next borrower starts outside any transaction, too.
    nxt = alias.wrapper()
    nxt_session = backend_id(nxt)
    nxt.close()
    no_transaction(observer, nxt_session, closing=False)


@pytest.mark.mysql
def test_mysql_failed_first_statement_does_not_keep_its_row_locks(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # The issue as reported: with autocommit off, an UPDATE that fails after
    # InnoDB locked the row leaves the transaction open, while the server
    # status flags (from the last OK packet; an ERR packet has none) say
    # "no transaction". The pool must roll back, not trust them.
    row_id = insert_row(observer)
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return="rollback")
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    wrapper.set_autocommit(False)
    with pytest.raises(DatabaseError), wrapper.cursor() as cursor:
        cursor.execute(FAILING_WRITE, [ROW])
    # The scenario: a transaction is open, and it holds the row.
    assert observer.idle_in_transaction([session]) == {session}
    assert lock_error(observer, row_id)
    wrapper.close()
    assert observer.idle_in_transaction([session]) == set()
    assert lock_error(observer, row_id) is None
    assert backend_id(alias.wrapper()) == session, "rolled back, pooled again"


@pytest.mark.mysql
def test_mysql_failed_procedure_transaction_is_rolled_back_after_djangos_ping(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # In autocommit mode a stored procedure can begin a transaction and then
    # fail: the ERR packet carries no status flags, and the ping Django's
    # is_usable() sends after an error clears the error without refreshing
    # them. The transaction must still be rolled back at checkin.
    row_id = insert_row(observer)
    observer.rows("DROP PROCEDURE IF EXISTS sapool_begin_and_fail")
    observer.rows(
        "CREATE PROCEDURE sapool_begin_and_fail() BEGIN START TRANSACTION; "
        f"UPDATE testapp_item SET name = 'renamed' WHERE id = {row_id}; "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'failed after the update'; END"
    )
    try:
        alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return="rollback")
        wrapper = alias.wrapper()
        session = backend_id(wrapper)
        with pytest.raises(DatabaseError, match="failed after the update"):
            execute(wrapper, "CALL sapool_begin_and_fail()")
        assert wrapper.errors_occurred, "Django pings before giving it back"
        assert observer.idle_in_transaction([session]) == {session}
        wrapper.close()
        assert observer.idle_in_transaction([session]) == set()
        assert lock_error(observer, row_id) is None
        assert backend_id(alias.wrapper()) == session, "rolled back, pooled again"
    finally:
        observer.rows("DROP PROCEDURE IF EXISTS sapool_begin_and_fail")
