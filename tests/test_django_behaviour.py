"""Django's own behaviour is unchanged by pooling."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import Error, connection, transaction
from django.db.backends.signals import connection_created
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_sapool import _registry
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import VENDOR, Observer, backend_id
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def count_items(observer: Observer, name: str) -> int:
    return int(
        observer.value("SELECT COUNT(*) FROM testapp_item WHERE name = %s", [name])
    )


def test_close_inside_atomic_never_autocommits_the_rest(observer: Observer) -> None:
    # As with Django's own backend, a connection closed inside atomic() fails
    # every query until the block ends. Had it been replaced by a fresh one
    # (Django 4.2 reconnects when it finds none), the rest of the block would
    # be autocommitted.

    def write_close_write() -> None:
        with transaction.atomic():
            Item.objects.create(name="before-close")
            connection.close()
            Item.objects.create(name="after-close")

    with pytest.raises(Error):
        write_close_write()
    assert count_items(observer, "before-close") == 0, "rolled back when given back"
    assert count_items(observer, "after-close") == 0
    assert backend_id(connection), "usable again after the block"


def test_is_usable_after_the_connection_is_gone(pool_alias: PoolAliasFactory) -> None:
    # Django's own test (#21553): is_usable() after _close() says no, quietly.
    wrapper = pool_alias().wrapper()
    backend_id(wrapper)
    wrapper._close()
    assert wrapper.is_usable() is False
    wrapper.close()
    assert backend_id(wrapper)


def test_direct_init_connection_state_runs_djangos_setup(
    pool_alias: PoolAliasFactory,
) -> None:
    # connect() skips Django's setup on a connection set up before; a direct
    # call (Django's own tests make one) still runs it.
    wrapper = pool_alias(pool_size=1, max_overflow=0).wrapper()
    backend_id(wrapper)
    wrapper.close()
    backend_id(wrapper)  # a reused connection
    if VENDOR == "postgresql":
        # Django's PostgreSQL setup sets the session time zone when it differs
        # (on a raw cursor, so ask the server).
        with wrapper.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'Asia/Tokyo'")
        wrapper.init_connection_state()
        with wrapper.cursor() as cursor:
            cursor.execute("SHOW TimeZone")
            assert cursor.fetchone()[0] == "UTC"
    else:
        with CaptureQueriesContext(wrapper) as captured:
            wrapper.init_connection_state()
        sql = [query["sql"] for query in captured.captured_queries]
        assert any("SET SESSION TRANSACTION ISOLATION LEVEL" in q for q in sql), sql


def test_connection_created_fires_at_every_checkout(
    pool_alias: PoolAliasFactory,
) -> None:
    seen: list[str] = []

    def receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
        seen.append(connection.alias)

    alias = pool_alias(pool_size=1, max_overflow=0)
    wrapper = alias.wrapper()
    connection_created.connect(receiver)
    try:
        for _ in range(3):
            backend_id(wrapper)
            wrapper.close()
    finally:
        connection_created.disconnect(receiver)
    assert seen == [alias.name] * 3


@pytest.mark.direct_server(
    reason=(
        "expects new server sessions after the pool is disposed, and the old "
        "ones to end; PgBouncer keeps and reuses its server connections"
    )
)
@pytest.mark.postgresql
def test_time_zone_change_starts_fresh_sessions(observer: Observer) -> None:
    before = backend_id(connection)
    connection.close()
    with override_settings(TIME_ZONE="Asia/Tokyo", USE_TZ=False):
        with connection.cursor() as cursor:
            cursor.execute("SHOW TimeZone")
            assert cursor.fetchone()[0] == "Asia/Tokyo"
        during = backend_id(connection)
        connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SHOW TimeZone")
        assert cursor.fetchone()[0] == "UTC"
    assert backend_id(connection) not in {before, during}
    observer.wait_gone([before, during])


@pytest.mark.direct_server(
    reason=("waits for the server session to end with our connection")
)
def test_close_pool_disposes_only_its_alias(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    first, second = pool_alias(), pool_alias()
    one, two = first.wrapper(), second.wrapper()
    sessions = [backend_id(one), backend_id(two)]
    one.close()
    two.close()
    one.close_pool()
    observer.wait_gone(sessions[:1])
    assert observer.alive(sessions) == {sessions[1]}
    assert backend_id(one) != sessions[0]


@pytest.mark.direct_server(
    reason=("waits for the server session to end with our connection")
)
def test_close_pool_while_lent_closes_it_on_return(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0)
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    wrapper.close_pool()
    assert backend_id(wrapper) == session, "a lent connection stays usable"
    wrapper.close()
    observer.wait_gone([session])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"CONN_MAX_AGE": None},
            "['CONN_MAX_AGE'] must be 0 with a django_sapool ENGINE",
        ),
        (
            {"OPTIONS": {"pool": True}},
            "['OPTIONS']['pool'] is Django's own connection pool",
        ),
        ({"OPTIONS": {"sapool": {"max_size": 3}}}, "has an unknown key 'max_size'"),
        (
            {"OPTIONS": {"sapool": {"timeout": -1}}},
            "['timeout'] must be a number of seconds > 0",
        ),
    ],
)
def test_configuration_errors_surface_on_connect(
    pool_alias: PoolAliasFactory, settings: dict[str, Any], message: str
) -> None:
    wrapper = pool_alias(settings=settings).wrapper()
    with pytest.raises(ImproperlyConfigured) as excinfo:
        wrapper.ensure_connection()
    assert f"DATABASES[{wrapper.alias!r}]" in str(excinfo.value)
    assert message in str(excinfo.value)
    assert all(pool.alias != wrapper.alias for pool in _registry.pools())


def test_pools_are_keyed_by_effective_parameters(pool_alias: PoolAliasFactory) -> None:
    # The test runner switches NAME in place on a shared settings dict; a pool
    # keyed by alias alone would keep talking to the old database.
    wrapper = pool_alias().wrapper()
    name = wrapper.settings_dict["NAME"]
    backend_id(wrapper)
    wrapper.close()
    other = "postgres" if VENDOR == "postgresql" else "mysql"
    wrapper.settings_dict["NAME"] = other
    with wrapper.cursor() as cursor:
        cursor.execute(
            "SELECT current_database()"
            if VENDOR == "postgresql"
            else "SELECT DATABASE()"
        )
        assert cursor.fetchone()[0] == other
    wrapper.close()
    wrapper.settings_dict["NAME"] = name
    # The pool of the previous NAME was disposed when the new one was made.
    assert len([pool for pool in _registry.pools() if pool.alias == wrapper.alias]) == 1
