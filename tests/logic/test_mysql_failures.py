"""The record of mysqlclient connections a statement failed on (no server needed).

A failure makes the next return ask the server instead of trusting the status
flags (tests/test_return_in_transaction.py proves that on MariaDB); here, the
record itself: kept per connection, forgotten at a reset or with the connection.
"""

from __future__ import annotations

import gc

from django_sapool import _drivers


class Connection:
    """Stands for a mysqlclient connection: only its identity matters here."""


def test_a_failure_is_kept_for_its_connection_only() -> None:
    failed, other = Connection(), Connection()
    _drivers.mysql_statement_failed(failed)
    assert _drivers._failed_on(failed)
    assert not _drivers._failed_on(other)
    _drivers._forget_failure(other)  # not recorded: nothing to forget
    assert _drivers._failed_on(failed)
    _drivers._forget_failure(failed)
    assert not _drivers._failed
    assert not _drivers._failed_on(failed)


def test_the_record_goes_with_its_connection() -> None:
    failed = Connection()
    _drivers.mysql_statement_failed(failed)
    _drivers.mysql_statement_failed(failed)  # twice: still one entry
    assert len(_drivers._failed) == 1
    del failed
    gc.collect()
    # Empty: the check at every return costs no call again.
    assert not _drivers._failed


def test_no_connection_records_nothing() -> None:
    _drivers.mysql_statement_failed(None)
    assert not _drivers._failed
