"""The password never appears in pool keys, reprs, logs, errors or exhaustion messages.

The tests log in as a user of their own with a password, so that the password
really is used (and would show up if anything leaked it).
"""

from __future__ import annotations

import logging

import pytest
from django.db import Error, OperationalError

import django_sapool
from django_sapool import _registry
from tests.support.fixtures import SECOND_LOGIN_PASSWORD
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import backend_id

pytestmark = pytest.mark.django_db(transaction=True)


def leaks(text: object) -> bool:
    return SECOND_LOGIN_PASSWORD in str(text)


def test_password_stays_out_of_everything(
    pool_alias: PoolAliasFactory,
    second_login: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's pool included
    alias = pool_alias(
        pool_size=1, max_overflow=0, timeout=0.2, pre_ping=True, settings=second_login
    )
    holder, waiter = alias.wrapper(), alias.wrapper()
    backend_id(holder)
    with pytest.raises(OperationalError) as exhausted:
        backend_id(waiter)
    holder.close()
    backend_id(waiter)
    waiter.close()
    pools = [pool for pool in _registry.pools() if pool.alias == alias.name]
    assert pools, "the secret user's pool exists"

    assert not leaks(exhausted.value)
    assert not leaks(exhausted.value.__cause__)
    assert not any(leaks(key) for key in _registry._pools)
    assert not any(leaks(repr(pool)) or leaks(pool.config) for pool in pools)
    assert not leaks(repr(holder))
    assert not leaks(repr(holder.connection))
    assert not leaks(django_sapool.get_stats())
    assert caplog.records, "the pool logged at DEBUG"
    for record in caplog.records:
        assert not leaks(record.getMessage()), record.getMessage()


def test_password_stays_out_of_connection_errors(
    pool_alias: PoolAliasFactory,
    second_login: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for settings in (
        {**second_login, "PORT": "1"},
        {**second_login, "NAME": "no_such_database"},
    ):
        wrapper = pool_alias(settings=settings).wrapper()
        with pytest.raises(Error) as failed:
            wrapper.ensure_connection()
        assert not leaks(failed.value)
        assert not leaks(failed.value.__cause__)
    for record in caplog.records:
        assert not leaks(record.getMessage())
