"""Per-driver adapters: what giving a connection back means on each server.

Each driver answers three questions about a raw driver connection without a
server round trip where it can: is it broken, is a transaction open, and how
is the session reset completely ("discard"). The pool calls these on checkin;
the statements they send are the only ones a checkin ever costs.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import _libmysql

# libpq's PQtransactionStatus values, shared by psycopg2 and psycopg 3.
_PG_IDLE, _PG_ACTIVE, _PG_INERROR, _PG_UNKNOWN = 0, 1, 3, 4
#: SQLSTATE read_only_sql_transaction: a write in a read-only transaction.
_PG_READ_ONLY_SQL_TRANSACTION = "25006"
_READ_ONLY_SETTING = "default_transaction_read_only"
#: MySQL/MariaDB: ER_OPTION_PREVENTS_STATEMENT (which option is in the
#: message: only read_only counts) and ER_READ_ONLY_MODE (MySQL, Aurora).
_MYSQL_OPTION_PREVENTS_STATEMENT, _MYSQL_READ_ONLY_MODE = 1290, 1836
_MYSQL_READ_ONLY_OPTIONS = ("--read-only", "--super-read-only")


class Driver(Protocol):
    """Vendor-specific handling of one pool's connections."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None: ...

    def is_broken(self, connection: Any) -> bool:
        """True when the driver already knows the connection cannot be reused."""

    def in_transaction(self, connection: Any) -> bool | None:
        """True or False when known; None when only a round trip could tell."""

    def in_failed_transaction(self, connection: Any) -> bool:
        """True inside a transaction the server refuses to continue (PostgreSQL)."""

    def autocommit(self, connection: Any) -> bool:
        """The driver's autocommit setting, read without a round trip."""

    def cursor_is_closed(self, cursor: Any) -> bool:
        """Whether a driver cursor can no longer run anything."""

    def close_named_cursors(self, connection: Any) -> None:
        """Close server-side cursors a borrower left open (WITH HOLD outlives
        its transaction); only called when the loan made a named cursor."""

    def closed_connection_error(self, database: Any) -> Exception:
        """What the driver raises when a closed connection is used."""

    def closed_connection_cursor(self, database: Any) -> Any:
        """What ``cursor()`` on a closed connection gives, or raises."""

    def end_transaction(self, connection: Any, *, commit: bool) -> None:
        """Commit or roll back what the borrower left open; send nothing if idle."""

    def discard(self, connection: Any) -> None:
        """Give the connection a fresh session, as if newly opened."""

    def refuses_writes(self, error: BaseException, connection: Any) -> bool:
        """Whether ``error`` says the server no longer takes writes (a demoted
        primary), not that this session asked for a read-only transaction.
        Only called after an error, so it may be slow; it sends nothing."""


class PostgreSQLDriver:
    """libpq tracks the transaction status client-side: no round trip to ask."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None:
        # Sessions made read-only by the alias itself (a replica alias):
        # their refused writes say nothing about the server.
        self._read_only_sessions = _READ_ONLY_SETTING in str(
            connect_params.get("options") or ""
        )

    def transaction_status(self, connection: Any) -> int:
        """libpq's PQtransactionStatus of the connection."""
        raise NotImplementedError

    def parameter_status(self, connection: Any, name: str) -> str | None:
        """A setting the server reports to the client (no round trip)."""
        raise NotImplementedError

    def read_only_flag(self, connection: Any) -> bool:
        """The driver's own read-only switch (it sends BEGIN READ ONLY)."""
        raise NotImplementedError

    def execute_unprepared(self, cursor: Any, sql: str) -> None:
        """Run a reset statement, never as a prepared statement."""
        cursor.execute(sql)

    def is_broken(self, connection: Any) -> bool:
        # psycopg2: closed is 0, 1 or 2 (broken); psycopg 3: closed and broken.
        if connection.closed or getattr(connection, "broken", False):
            return True
        # ACTIVE: a result was never consumed; UNKNOWN: the socket is gone.
        return self.transaction_status(connection) in (_PG_ACTIVE, _PG_UNKNOWN)

    def in_transaction(self, connection: Any) -> bool:
        return self.transaction_status(connection) != _PG_IDLE

    def in_failed_transaction(self, connection: Any) -> bool:
        return self.transaction_status(connection) == _PG_INERROR

    # Both drivers answer with a bool. Read through attrgetter, a C call:
    # each runs once or more per request, and a method of ours is a frame.
    autocommit: Callable[[Any], bool] = operator.attrgetter("autocommit")
    cursor_is_closed: Callable[[Any], bool] = operator.attrgetter("closed")

    def close_named_cursors(self, connection: Any) -> None:
        with connection.cursor() as cursor:
            self.execute_unprepared(cursor, "CLOSE ALL")

    def closed_connection_error(self, database: Any) -> Exception:
        error: Exception = database.InterfaceError("connection already closed")
        return error  # psycopg2's words

    def closed_connection_cursor(self, database: Any) -> Any:
        raise self.closed_connection_error(database)

    def end_transaction(self, connection: Any, *, commit: bool) -> None:
        if not self.in_transaction(connection):
            return
        if commit:
            connection.commit()
        else:
            connection.rollback()
        if self.in_transaction(connection):
            # psycopg2 in autocommit ignores rollback() after a raw BEGIN.
            with connection.cursor() as cursor:
                cursor.execute("COMMIT" if commit else "ROLLBACK")

    def discard(self, connection: Any) -> None:
        self.end_transaction(connection, commit=False)
        # DISCARD ALL cannot run inside a transaction block.
        connection.autocommit = True
        with connection.cursor() as cursor:
            self.execute_unprepared(cursor, "DISCARD ALL")

    def refuses_writes(self, error: BaseException, connection: Any) -> bool:
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code != _PG_READ_ONLY_SQL_TRANSACTION or self._read_only_sessions:
            return False
        # 25006 also answers a write in a transaction the session made read-
        # only itself (BEGIN READ ONLY, SET TRANSACTION READ ONLY, the
        # driver's read_only): then the server's defaults are unchanged. A
        # demoted server is a standby (in_hot_standby) or was made read-only
        # for everyone (default_transaction_read_only, applied to open
        # sessions at a reload). PostgreSQL 14+ reports both to the client
        # with each reply, so they are read here without a round trip.
        standby = self.parameter_status(connection, "in_hot_standby")
        default = self.parameter_status(connection, _READ_ONLY_SETTING)
        if standby is None and default is None:  # PostgreSQL 13 or older
            return not self.read_only_flag(connection)
        return "on" in (standby, default)


class Psycopg3Driver(PostgreSQLDriver):
    def transaction_status(self, connection: Any) -> int:
        return int(connection.pgconn.transaction_status)

    def in_transaction(self, connection: Any) -> bool:  # per request: inlined
        return connection.pgconn.transaction_status != _PG_IDLE  # type: ignore[no-any-return]

    def parameter_status(self, connection: Any, name: str) -> str | None:
        value = connection.info.parameter_status(name)
        return None if value is None else str(value)

    def read_only_flag(self, connection: Any) -> bool:
        return bool(connection.read_only)

    def closed_connection_error(self, database: Any) -> Exception:
        error: Exception = database.OperationalError("the connection is closed")
        return error

    def execute_unprepared(self, cursor: Any, sql: str) -> None:
        # Never prepare the statement that drops prepared statements; psycopg
        # clears its own cache of them when it sees DISCARD ALL complete.
        cursor.execute(sql, prepare=False)


class Psycopg2Driver(PostgreSQLDriver):
    def transaction_status(self, connection: Any) -> int:
        return int(connection.get_transaction_status())

    def in_transaction(self, connection: Any) -> bool:  # per request: inlined
        return connection.get_transaction_status() != _PG_IDLE  # type: ignore[no-any-return]

    def parameter_status(self, connection: Any, name: str) -> str | None:
        value = connection.get_parameter_status(name)
        return None if value is None else str(value)

    def read_only_flag(self, connection: Any) -> bool:
        return bool(connection.readonly)


#: mysqlclient connections on which a statement failed since their last reset,
#: by id, each a weak reference that removes itself. Not a WeakSet: every
#: return asks, and an empty dict answers without a call.
_failed: dict[int, weakref.ref[Any]] = {}


def mysql_statement_failed(connection: Any) -> None:
    """Note a failure: the status flags may now hide an open transaction.

    The driver's own error code cannot tell: closing the cursor clears it.
    """
    if connection is not None:
        key = id(connection)

        def forget(_: weakref.ref[Any]) -> None:  # the connection is freed
            _failed.pop(key, None)

        _failed[key] = weakref.ref(connection, forget)


def _failed_on(connection: Any) -> bool:
    ref = _failed.get(id(connection))
    return ref is not None and ref() is connection


def _forget_failure(connection: Any) -> None:
    if _failed_on(connection):
        del _failed[id(connection)]


class MySQLDriver:
    """mysqlclient on MariaDB or MySQL."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None:
        # What mysqlclient sets per session at connect, from its parameters;
        # COM_RESET_CONNECTION sets it all back to the server's defaults.
        self._init_command: str | None = connect_params.get("init_command")
        self._charset: str | None = connect_params.get("charset") or None
        self._collation: str | None = connect_params.get("collation") or None
        self._sql_mode: str | None = connect_params.get("sql_mode") or None

    def is_broken(self, connection: Any) -> bool:
        # mysqlclient keeps no "lost" flag: a dead connection shows when the
        # reset or Django's is_usable() ping fails.
        return not connection.open

    def in_transaction(self, connection: Any) -> bool | None:
        # The status flags come from the last OK packet; an ERR packet has
        # none and a ping leaves them as they were. With autocommit off, a
        # first statement that fails after InnoDB locked rows leaves a
        # transaction open that the flags never show; so does a stored
        # procedure that begins one and fails. All checks are client-side.
        if (
            not connection.get_autocommit()
            or connection.errno()
            or (_failed and _failed_on(connection))
        ):
            return None
        return _libmysql.in_transaction(connection)

    def in_failed_transaction(self, connection: Any) -> bool:
        return False  # MySQL keeps a transaction usable after an error

    #: mysqlclient's get_autocommit() answers with a bool; a C call (as for
    #: PostgreSQL), as it runs per request.
    autocommit: Callable[[Any], bool] = operator.methodcaller("get_autocommit")

    def cursor_is_closed(self, cursor: Any) -> bool:
        # Django's MySQL backend wraps the driver's cursor, and would answer
        # for it only after raising AttributeError inside: ask the driver's.
        driver_cursor = getattr(cursor, "cursor", cursor)
        return driver_cursor.connection is None  # MySQLdb's close() drops it

    def close_named_cursors(self, connection: Any) -> None:
        pass  # Django makes no named cursors on MySQL

    def closed_connection_error(self, database: Any) -> Exception:
        error: Exception = database.InterfaceError(0, "")  # mysqlclient's
        return error

    def closed_connection_cursor(self, database: Any) -> Any:
        # mysqlclient lends a cursor on a closed connection; it fails on use.
        return _ClosedCursor(self.closed_connection_error(database))

    def end_transaction(self, connection: Any, *, commit: bool) -> None:
        if self.in_transaction(connection) is False:
            return
        if commit:
            connection.commit()
        else:
            connection.rollback()
        _forget_failure(connection)

    def discard(self, connection: Any) -> None:
        # Django sets its own autocommit at every checkout; keeping the
        # borrower's (usually Django's) spares that a round trip.
        autocommit = connection.get_autocommit()
        _libmysql.reset_connection(connection)
        _forget_failure(connection)
        # Then what the driver did at connect, in its order, in one statement
        # where it can. Its reply also refreshes the status flags (the
        # library does not read the reset's) and, through the server's
        # session tracking, the client's charset, which decodes results.
        charset = self._charset or connection.character_set_name()
        names = f"NAMES {charset}"
        if self._collation:
            names += f" COLLATE {self._collation}"
        assignments: list[str] = [names]
        params: list[object] = []
        if self._sql_mode:
            assignments.append("sql_mode = %s")
            params.append(self._sql_mode)
        assignments.append("autocommit = %s")
        params.append(int(autocommit))
        with connection.cursor() as cursor:
            if self._init_command:
                cursor.execute(self._init_command)
            cursor.execute("SET " + ", ".join(assignments), params)

    def refuses_writes(self, error: BaseException, connection: Any) -> bool:
        # A session cannot set read_only, which is global: unlike 1792 (a
        # READ ONLY transaction of the session's own), these are the server's.
        args: tuple[Any, ...] = getattr(error, "args", ())
        code = args[0] if args else None
        if code == _MYSQL_READ_ONLY_MODE:
            return True
        if code != _MYSQL_OPTION_PREVENTS_STATEMENT or len(args) < 2:
            return False  # 1290 also names --secure-file-priv and others
        message = str(args[1])
        return any(option in message for option in _MYSQL_READ_ONLY_OPTIONS)


class _ClosedCursor:
    """A mysqlclient cursor of a closed connection: every use fails."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def close(self) -> None:
        """Closing it does nothing, as for the driver's."""

    def __getattr__(self, name: str) -> Any:
        raise type(self._error)(*self._error.args)
