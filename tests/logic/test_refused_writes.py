"""Which errors say "this server no longer takes writes" (no server needed).

The codes and messages are those the real servers sent in
tests/test_failover.py (PostgreSQL 15, MariaDB 10.11) and MySQL 8's wording
of the same error; the scenarios there check the whole path on real servers.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_sapool._drivers import MySQLDriver, Psycopg2Driver, Psycopg3Driver

MARIADB_READ_ONLY = (
    "The MariaDB server is running with the --read-only option so it cannot "
    "execute this statement"
)
MYSQL_SUPER_READ_ONLY = (
    "The MySQL server is running with the --super-read-only option so it "
    "cannot execute this statement"
)
SECURE_FILE_PRIV = (
    "The MySQL server is running with the --secure-file-priv option so it "
    "cannot execute this statement"
)


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        ((1290, MARIADB_READ_ONLY), True),
        ((1290, MYSQL_SUPER_READ_ONLY), True),
        ((1836, "Running in read-only mode"), True),
        # The session's own READ ONLY transaction, another option, other errors.
        ((1792, "Cannot execute statement in a READ ONLY transaction"), False),
        ((1290, SECURE_FILE_PRIV), False),
        ((1290,), False),
        ((2006, "Server has gone away"), False),
        ((1036, "Table 't' is read only"), False),
        ((), False),
    ],
)
def test_mysql(args: tuple[Any, ...], refused: bool) -> None:
    assert MySQLDriver({}).refuses_writes(Exception(*args), None) is refused


class PgError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__("cannot execute INSERT in a read-only transaction")
        self.sqlstate = self.pgcode = code


class Psycopg3Connection:
    """What Psycopg3Driver reads: reported settings and the read_only flag."""

    def __init__(self, read_only: bool | None = None, **reported: str) -> None:
        self.read_only = read_only
        self.info = self
        self._reported = reported

    def parameter_status(self, name: str) -> str | None:
        return self._reported.get(name)


class Psycopg2Connection:
    def __init__(self, read_only: bool | None = None, **reported: str) -> None:
        self.readonly = read_only
        self._reported = reported

    def get_parameter_status(self, name: str) -> str | None:
        return self._reported.get(name)


SERVER_DEFAULTS = {"default_transaction_read_only": "off", "in_hot_standby": "off"}


@pytest.mark.parametrize(
    ("driver", "connection_class"),
    [(Psycopg3Driver, Psycopg3Connection), (Psycopg2Driver, Psycopg2Connection)],
    ids=["psycopg", "psycopg2"],
)
@pytest.mark.parametrize(
    ("code", "reported", "read_only", "options", "refused"),
    [
        # Made read-only for everyone (ALTER SYSTEM, a reload), or a standby.
        ("25006", {**SERVER_DEFAULTS, "default_transaction_read_only": "on"},
         None, "", True),
        ("25006", {**SERVER_DEFAULTS, "in_hot_standby": "on"}, None, "", True),
        # The session asked: BEGIN READ ONLY, SET TRANSACTION READ ONLY.
        ("25006", SERVER_DEFAULTS, None, "", False),
        ("25006", SERVER_DEFAULTS, True, "", False),
        # An alias whose sessions are read-only by its own options.
        ("25006", {**SERVER_DEFAULTS, "default_transaction_read_only": "on"},
         None, "-c default_transaction_read_only=on", False),
        # PostgreSQL 13 or older reports neither: only the driver flag tells.
        ("25006", {}, None, "", True),
        ("25006", {}, True, "", False),
        # Not a refused write.
        ("25P02", {**SERVER_DEFAULTS, "default_transaction_read_only": "on"},
         None, "", False),
        ("57P01", SERVER_DEFAULTS, None, "", False),
    ],
)  # fmt: skip
def test_postgresql(
    driver: Any,
    connection_class: Any,
    code: str,
    reported: dict[str, str],
    read_only: bool | None,
    options: str,
    refused: bool,
) -> None:
    connection = connection_class(read_only, **reported)
    params = {"options": options} if options else {}
    assert driver(params).refuses_writes(PgError(code), connection) is refused
