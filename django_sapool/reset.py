"""What giving a connection back means on each server.

Each vendor answers three questions about a raw driver connection without a
server round trip where it can: is it broken, is a transaction open, and how
is the session reset completely ("discard"). The pool calls these on checkin;
the statements they send are the only ones a checkin ever costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from . import mysql_client

# libpq's PQtransactionStatus values, shared by psycopg2 and psycopg 3.
_PG_IDLE, _PG_ACTIVE, _PG_INERROR, _PG_UNKNOWN = 0, 1, 3, 4


class Session(Protocol):
    """Vendor-specific handling of one pool's connections."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None: ...

    def is_broken(self, connection: Any) -> bool:
        """True when the driver already knows the connection cannot be reused."""

    def in_transaction(self, connection: Any) -> bool | None:
        """True or False when known; None when only a round trip could tell."""

    def in_failed_transaction(self, connection: Any) -> bool:
        """True inside a transaction the server refuses to continue (PostgreSQL)."""

    def cursor_is_closed(self, cursor: Any) -> bool:
        """Whether a driver cursor can no longer run anything."""

    def close_named_cursors(self, connection: Any) -> None:
        """Close server-side cursors a borrower left open (WITH HOLD outlives
        its transaction); only called when the loan made a named cursor."""

    def end_transaction(self, connection: Any, *, commit: bool) -> None:
        """Commit or roll back what the borrower left open; send nothing if idle."""

    def discard(self, connection: Any) -> None:
        """Give the connection a fresh session, as if newly opened."""


class PostgreSQLSession:
    """libpq tracks the transaction status client-side: no round trip to ask."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None:
        pass

    def transaction_status(self, connection: Any) -> int:
        """libpq's PQtransactionStatus of the connection."""
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

    def cursor_is_closed(self, cursor: Any) -> bool:
        return bool(cursor.closed)

    def close_named_cursors(self, connection: Any) -> None:
        with connection.cursor() as cursor:
            self.execute_unprepared(cursor, "CLOSE ALL")

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


class Psycopg3Session(PostgreSQLSession):
    def transaction_status(self, connection: Any) -> int:
        return int(connection.pgconn.transaction_status)

    def execute_unprepared(self, cursor: Any, sql: str) -> None:
        # Never prepare the statement that drops prepared statements; psycopg
        # clears its own cache of them when it sees DISCARD ALL complete.
        cursor.execute(sql, prepare=False)


class Psycopg2Session(PostgreSQLSession):
    def transaction_status(self, connection: Any) -> int:
        return int(connection.get_transaction_status())


class MySQLSession:
    """mysqlclient on MariaDB or MySQL."""

    def __init__(self, connect_params: Mapping[str, Any]) -> None:
        # COM_RESET_CONNECTION forgets what init_command set; run it again.
        self._init_command: str | None = connect_params.get("init_command")

    def is_broken(self, connection: Any) -> bool:
        # mysqlclient keeps no "lost" flag: a dead connection shows when the
        # reset or Django's is_usable() ping fails.
        return not connection.open

    def in_transaction(self, connection: Any) -> bool | None:
        return mysql_client.in_transaction(connection)

    def in_failed_transaction(self, connection: Any) -> bool:
        return False  # MySQL keeps a transaction usable after an error

    def cursor_is_closed(self, cursor: Any) -> bool:
        return cursor.connection is None  # MySQLdb's close() drops it

    def close_named_cursors(self, connection: Any) -> None:
        pass  # Django makes no named cursors on MySQL

    def end_transaction(self, connection: Any, *, commit: bool) -> None:
        if self.in_transaction(connection) is False:
            return
        if commit:
            connection.commit()
        else:
            connection.rollback()

    def discard(self, connection: Any) -> None:
        mysql_client.reset_connection(connection)
        if self._init_command:
            with connection.cursor() as cursor:
                cursor.execute(self._init_command)
