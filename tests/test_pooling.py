"""Connections are shared, bounded, and handed to Django as raw driver connections."""

from __future__ import annotations

import json
import time
from typing import Any, cast
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import OperationalError, connection

import django_sapool
from django_sapool import _registry
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import VENDOR, Observer, Peak, backend_id
from tests.support.waiting import run_threads, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.direct_server(
    reason=(
        "counts the server sessions our pool keeps open; PgBouncer keeps its "
        "own (tests/test_pgbouncer.py asserts what holds behind it)"
    )
)
def test_threads_share_a_bounded_set_of_server_sessions(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=3, max_overflow=2, timeout=30)
    baseline = observer.sessions_on_database() | {observer.own_id}
    seen: set[int] = set()

    def request_cycles() -> None:
        wrapper = alias.wrapper()
        for _ in range(200):
            seen.add(backend_id(wrapper))
            wrapper.close()

    peak = Peak()
    with peak.watching(lambda watcher: len(watcher.sessions_on_database() - baseline)):
        assert run_threads([request_cycles] * 8) == []
    assert 1 <= len(seen) <= 5, seen
    assert peak.most <= 5
    # pool_size sessions stay open for reuse; overflow ones closed on return
    # (the server ends those soon after).
    wait_until(lambda: len(observer.alive(seen)) == 3, "overflow sessions end")


@pytest.mark.session_bound(
    reason=(
        "in transaction mode one connection's transactions may each run in "
        "another server session"
    )
)
def test_reuse_in_one_thread_keeps_one_server_session(
    pool_alias: PoolAliasFactory,
) -> None:
    wrapper = pool_alias(pool_size=2).wrapper()
    ids = set()
    for _ in range(50):
        ids.add(backend_id(wrapper))
        wrapper.close()
    assert len(ids) == 1


@pytest.mark.session_bound(
    reason=(
        "expects three held connections on three server sessions; in "
        "transaction mode idle connections hold none"
    )
)
def test_exhausted_pool_raises_pool_timeout_then_recovers(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=2, max_overflow=1, timeout=0.5)
    holders = [alias.wrapper() for _ in range(3)]
    held = {backend_id(w) for w in holders}
    assert len(held) == 3

    waiting = alias.wrapper()
    started = time.monotonic()
    with pytest.raises(OperationalError) as excinfo:
        waiting.ensure_connection()
    waited = time.monotonic() - started
    assert 0.45 <= waited < 10, "fails after about `timeout`, never hangs"
    cause = excinfo.value.__cause__
    assert isinstance(cause, django_sapool.PoolTimeout)
    assert isinstance(cause, cast(Any, connection).Database.OperationalError)
    message = str(excinfo.value)
    assert f"database alias {alias.name!r}" in message
    assert "pool_size=2, max_overflow=1, 3 checked out" in message
    assert "timeout=0.5" in message

    # connect() itself (as Django's own pool tests call it) raises PoolTimeout.
    with pytest.raises(django_sapool.PoolTimeout):
        waiting.connect()
    assert observer.sessions_on_database() >= held

    holders[0].close()
    assert backend_id(waiting) in held, "a returned connection is reused"


def test_a_waiting_checkout_gets_a_returned_connection_at_once(
    pool_alias: PoolAliasFactory,
) -> None:
    """A return wakes a checkout waiting in QueuePool: it must not wait out
    its timeout (the return puts the connection back under the queue's lock
    and notifies whoever waits; see _queue_pool.FastQueuePool)."""
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=20)
    holder, waiter = alias.wrapper(), alias.wrapper()
    holder.ensure_connection()
    waited: list[float] = []

    def wait_for_it() -> None:
        started = time.monotonic()
        waiter.ensure_connection()
        waited.append(time.monotonic() - started)
        waiter.close()

    def give_back() -> None:
        wait_until(
            lambda: django_sapool.get_stats(alias.name)["requests_waiting"] == 1,
            "the waiter waits",
        )
        time.sleep(0.2)  # well inside QueuePool's wait, not at its start
        holder.close()

    holder.inc_thread_sharing()  # closed from another thread
    waiter.inc_thread_sharing()
    assert run_threads([wait_for_it, give_back], timeout=30) == []
    assert len(waited) == 1
    # Woken by the return, not at the end of its wait slice (2 s and more).
    assert 0.15 <= waited[0] < 1.5, waited


@pytest.mark.direct_server(
    reason=(
        "compares the driver's backend pid with the server's; PgBouncer gives "
        "the client a key of its own"
    )
)
def test_django_gets_the_raw_driver_connection(pool_alias: PoolAliasFactory) -> None:
    wrapper = pool_alias().wrapper()
    session = backend_id(wrapper)
    raw = wrapper.connection
    assert type(raw).__module__.split(".")[0] in {"psycopg", "psycopg2", "MySQLdb"}
    if VENDOR == "postgresql":
        assert raw.info.backend_pid == session
    # Autocommit written by Django reaches the driver (a proxy would absorb it).
    wrapper.set_autocommit(False)
    assert driver_autocommit(raw) is False
    wrapper.rollback()
    wrapper.set_autocommit(True)
    assert driver_autocommit(raw) is True


def driver_autocommit(raw: Any) -> bool:
    return bool(raw.autocommit if VENDOR == "postgresql" else raw.get_autocommit())


def wsgi_get(path: str) -> Any:
    """One request through Django's real WSGI handler, signals and all.

    (The test Client keeps connections open between requests on purpose.)
    """
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    response = WSGIHandler()(environ, lambda status, headers: None)
    body = b"".join(response)
    response.close()  # sends request_finished, which gives the connection back
    return json.loads(body)


@pytest.mark.direct_server(
    reason=("counts server sessions; PgBouncer spreads requests over its own")
)
def test_requests_through_django_reuse_pooled_sessions(observer: Observer) -> None:
    pool_size = connection.settings_dict["OPTIONS"]["sapool"]["pool_size"]
    # MySQL's Connections counter is the whole server's: another client (a
    # second test run) may connect meanwhile. Unpooled, every attempt would
    # open 200; pooled, one attempt without outside noise is enough.
    opened = []
    for _ in range(3):
        before = observer.connections_so_far() if VENDOR == "mysql" else 0
        ids = {wsgi_get("/backend/")["backend"] for _ in range(200)}
        assert 1 <= len(ids) <= pool_size
        assert connection.connection is None, (
            "Django gave the connection back after each request"
        )
        assert observer.alive(ids) == ids
        if VENDOR != "mysql":
            return
        opened.append(observer.connections_so_far() - before)
        if opened[-1] <= pool_size:
            return
    pytest.fail(f"server connections opened per 200 requests: {opened}")


def test_no_db_alias_is_never_pooled() -> None:
    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT 1")
    assert all(pool.alias != "__no_db__" for pool in _registry.pools())


def test_copies_of_an_alias_share_its_pool(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=0.2)
    first, second = alias.wrapper(), alias.wrapper()
    backend_id(first)
    with pytest.raises(OperationalError):
        backend_id(second)  # the only connection is lent to `first`
    first.close()
    assert backend_id(second)


@pytest.mark.direct_server(reason="waits for the previous pool's server session to end")
def test_a_changed_database_name_disposes_the_previous_pool(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # Settings changed in place (a test runner, a reconfigured alias): the
    # previous pool's idle sessions are closed, not kept for the process's life.
    alias = pool_alias(pool_size=2)
    wrapper = alias.wrapper()
    first = backend_id(wrapper)
    wrapper.close()
    other = "postgres" if VENDOR == "postgresql" else "mysql"
    moved = alias.wrapper()
    moved.settings_dict["NAME"] = other
    backend_id(moved)
    moved.close()
    observer.wait_gone([first])
    assert len([p for p in _registry.pools() if p.alias == alias.name]) == 1
