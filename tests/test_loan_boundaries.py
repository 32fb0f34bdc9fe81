"""Nothing made during one loan reaches past it, compared with Django's backend.

With Django's stock backend, ``close()`` ends the server session, so anything
made on the connection (cursors, server-side cursors, a transaction) ends
with it. A pooled connection lives on and is lent to the next borrower: each
test here runs a scenario on the stock backend and on ours, and checks that
what the caller and the server saw differs only where pooling is the point.
"""

from __future__ import annotations

import copy
import gc
import logging
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import Error, ProgrammingError, transaction
from django.db.utils import load_backend

import django_sapool
from django_sapool import _listeners, _registry, stats
from django_sapool._reaper import reaper
from django_sapool._watchdog import watchdog
from tests.support.pool_alias import PoolAlias, PoolAliasFactory, registered
from tests.support.server import Observer, backend_id, stock_settings
from tests.support.tcp_proxy import tcp_proxy
from tests.test_faults import driver_params

pytestmark = pytest.mark.django_db(transaction=True)

ENGINES = ["stock", "pooled"]


def make_wrapper(engine: str, alias: PoolAlias) -> Any:
    """A DatabaseWrapper on the stock backend, or on the pooled ``alias``."""
    if engine == "pooled":
        return alias.wrapper()
    settings_dict = stock_settings()
    backend = load_backend(settings_dict["ENGINE"])
    return backend.DatabaseWrapper(settings_dict, f"stock-{alias.name}")


def rows_named(observer: Observer, name: str) -> int:
    return int(
        observer.value("SELECT COUNT(*) FROM testapp_item WHERE name = %s", [name])
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cursor_kept_after_close_cannot_write_into_the_next_borrowers_transaction(
    engine: str, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0)
    first = make_wrapper(engine, alias)
    kept = first.cursor()
    kept.execute("SELECT 1")
    first.close()  # the end of request A: its cursor is still referenced

    second = make_wrapper(engine, alias)  # request B, on the same connection
    second.set_autocommit(False)
    with second.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) VALUES ('by-b')")
    with pytest.raises(Error):  # as on stock: the cursor's connection is gone
        kept.execute("INSERT INTO testapp_item (name) VALUES ('by-a')")
    second.rollback()
    second.set_autocommit(True)
    second.close()
    assert rows_named(observer, "by-a") == rows_named(observer, "by-b") == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cursor_kept_by_another_thread_fails_after_close(
    engine: str, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # Request B runs in another thread while A's cursor is used again.
    alias = pool_alias(pool_size=1, max_overflow=0)
    first = make_wrapper(engine, alias)
    kept = first.cursor()
    kept.execute("SELECT 1")
    first.close()
    in_transaction, done = threading.Event(), threading.Event()

    def request_b() -> None:
        second = make_wrapper(engine, alias)
        second.set_autocommit(False)
        with second.cursor() as cursor:
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('by-b')")
        in_transaction.set()
        done.wait(10)
        second.rollback()
        second.set_autocommit(True)
        second.close()

    thread = threading.Thread(target=request_b)
    thread.start()
    assert in_transaction.wait(10)
    try:
        with pytest.raises(Error):
            kept.execute("INSERT INTO testapp_item (name) VALUES ('by-a')")
    finally:
        done.set()
        thread.join()
    assert rows_named(observer, "by-a") == 0


def set_driver_autocommit(raw: Any, on: bool) -> None:
    """Behind Django's back, as code holding the raw connection might."""
    if hasattr(raw, "get_autocommit"):  # mysqlclient
        raw.autocommit(on)
    else:  # psycopg 2 and 3
        raw.autocommit = on


def driver_autocommit(raw: Any) -> bool:
    value = raw.get_autocommit() if hasattr(raw, "get_autocommit") else raw.autocommit
    return bool(value)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("how", ["django", "driver"])
def test_autocommit_turned_off_by_a_borrower_is_on_for_the_next(
    engine: str, how: str, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # connect() skips Django's set_autocommit(True) when the driver has it on
    # already: a connection given back with it off must still get it back on.
    alias = pool_alias(pool_size=1, max_overflow=0)
    first = make_wrapper(engine, alias)
    first.ensure_connection()
    if how == "django":
        first.set_autocommit(False)
    else:
        set_driver_autocommit(first.connection, False)
    first.close()  # no statement ran: no transaction to reset

    second = make_wrapper(engine, alias)
    with second.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_item (name) VALUES ('autocommitted')")
    assert second.get_autocommit() is True
    assert driver_autocommit(second.connection) is True
    second.close()
    # Committed by the server, not left in an open transaction.
    assert rows_named(observer, "autocommitted") == 1


@pytest.mark.direct_server(
    reason=(
        "a WITH HOLD cursor is the server session's; PgBouncer's own reset "
        "(DISCARD ALL) or transaction mode would end it for either engine"
    )
)
@pytest.mark.postgresql
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("reset", ["rollback", "commit", None])
def test_a_server_side_cursor_left_open_does_not_reach_the_next_borrower(
    engine: str, reset: str | None, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # QuerySet.iterator() on PostgreSQL: a named WITH HOLD cursor (autocommit),
    # named after the thread; a new wrapper in the same thread reuses the name.
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return=reset)
    observer.rows("INSERT INTO testapp_item (name) VALUES ('one'), ('two')")
    first = make_wrapper(engine, alias)
    iterator = first.chunked_cursor()
    iterator.execute("SELECT name FROM testapp_item ORDER BY name")
    assert iterator.fetchmany(1) == [("one",)]
    first.close()  # the request ends with the iterator unfinished

    second = make_wrapper(engine, alias)
    with second.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pg_cursors")
        assert cursor.fetchone()[0] == 0, "the server still holds the cursor"
    mine = second.chunked_cursor()  # the same name: must not already exist
    mine.execute("SELECT name FROM testapp_item ORDER BY name DESC")
    with pytest.raises(Error):  # A's iterator cannot read B's cursor
        iterator.fetchmany(1)
    assert mine.fetchmany(1) == [("two",)]
    mine.close()
    iterator.close()
    second.close()


@pytest.mark.direct_server(reason="compares server session ids")
@pytest.mark.postgresql
@pytest.mark.parametrize("engine", ENGINES)
def test_an_aborted_transaction_is_rolled_back_and_the_connection_kept(
    engine: str,
    pool_alias: PoolAliasFactory,
    observer: Observer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0)
    wrapper = make_wrapper(engine, alias)
    session = backend_id(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("BEGIN")
        with pytest.raises(ProgrammingError):
            cursor.execute("SELECT * FROM no_such_table")
    caplog.set_level(logging.WARNING, logger="django_sapool")
    wrapper.close_if_unusable_or_obsolete()  # the end of the request
    if wrapper.connection is not None:
        wrapper.close()
    if engine == "stock":
        # Closed: the server ends the session (and its transaction) shortly
        # after; until then it may still show it idle in a transaction.
        observer.wait_gone([session])
        return
    assert observer.idle_in_transaction([session]) == set()
    assert backend_id(alias.wrapper()) == session, "rolled back and pooled again"
    stats = django_sapool.get_stats(alias.name)
    assert stats["connections_lost"] == stats["returns_bad"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.direct_server(reason="waits for the server session itself to end")
def test_a_connection_collected_after_dispose_is_closed(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # dispose() promises that lent connections are closed when they come
    # back; that includes one the garbage collector brings back.
    alias = pool_alias(pool_size=1)
    sessions: list[int] = []
    borrowed, disposed = threading.Event(), threading.Event()

    def borrower() -> None:
        local = threading.local()  # the only reference, as in Django
        backend = load_backend(alias.settings_dict["ENGINE"])
        local.wrapper = backend.DatabaseWrapper(
            copy.deepcopy(alias.settings_dict), alias.name
        )
        sessions.append(backend_id(local.wrapper))
        borrowed.set()
        disposed.wait(10)

    thread = threading.Thread(target=borrower)
    thread.start()
    assert borrowed.wait(10)
    django_sapool.dispose(alias.name)
    disposed.set()
    thread.join()
    gc.collect()
    reaper.wait_idle()
    observer.wait_gone(sessions)


def test_prewarm_never_waits_for_a_connection_held_elsewhere(
    pool_alias: PoolAliasFactory,
) -> None:
    # The pool's first checkout comes while other requests hold every other
    # slot (requests racing at start-up): warming must not wait for them.
    alias = pool_alias(pool_size=3, max_overflow=0, prewarm=3, timeout=3)
    holders = [alias.wrapper(), alias.wrapper()]
    holders[0].ensure_connection()
    pool = holders[0]._sapool_pool
    pool._prewarm_pending = False  # as if these two raced past the first checkout
    holders[1].ensure_connection()
    pool._prewarm_pending = True
    first = alias.wrapper()
    first.ensure_connection()  # takes the last slot, then would warm two more
    stats = django_sapool.get_stats(alias.name)
    assert stats["requests_wait_ms"] < 1500, "the checkout waited for a slot"
    assert (stats["connections_num"], stats["pool_used"]) == (3, 3)
    for wrapper in [*holders, first]:
        wrapper.close()


def test_prewarm_opens_idle_connections_at_the_first_checkout(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=3, prewarm=3)
    wrapper = alias.wrapper()
    backend_id(wrapper)
    stats = django_sapool.get_stats(alias.name)
    figures = (stats["connections_num"], stats["pool_available"], stats["pool_used"])
    assert figures == (3, 2, 1)
    wrapper.close()


@pytest.mark.postgresql
def test_pgconnect_timeout_from_the_environment_is_left_in_charge(
    pool_alias: PoolAliasFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL only: PGCONNECT_TIMEOUT is libpq's own setting."""
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    stock = make_wrapper("stock", pool_alias()).get_connection_params()
    ours = driver_params(pool_alias().wrapper())
    assert "connect_timeout" not in stock
    assert "connect_timeout" not in ours


@pytest.mark.postgresql
def test_a_service_file_connect_timeout_is_left_in_charge(
    pool_alias: PoolAliasFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL only: a service file is libpq's own setting."""
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text("[slow]\nconnect_timeout=4\n\n[plain]\nport=5432\n")
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    slow = pool_alias(options={"service": "slow"}).wrapper()
    plain = pool_alias(options={"service": "plain"}).wrapper()
    assert "connect_timeout" not in driver_params(slow)
    assert driver_params(plain)["connect_timeout"] == 10


@pytest.mark.direct_server(reason="waits for the server session itself to end")
def test_a_collected_borrowers_connection_is_closed_off_the_collecting_thread(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # The collector may run in a thread that holds one of our locks (or runs
    # an event loop): returning a dead borrower's connection there must send
    # nothing and take none of them.
    alias = pool_alias(pool_size=1, max_overflow=0, ping_timeout=5)
    sessions: list[int] = []

    def borrower() -> None:
        local = threading.local()  # the only reference, as in Django
        backend = load_backend(alias.settings_dict["ENGINE"])
        local.wrapper = backend.DatabaseWrapper(
            copy.deepcopy(alias.settings_dict), alias.name
        )
        sessions.append(backend_id(local.wrapper))
        local.wrapper.set_autocommit(False)  # a rollback would be a round trip
        with local.wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('left-open')")

    thread = threading.Thread(target=borrower)
    thread.start()
    thread.join()

    def collect_holding_our_locks() -> None:
        with watchdog._lock, pool_stats(alias)._lock:
            gc.collect()

    collector = threading.Thread(target=collect_holding_our_locks, daemon=True)
    collector.start()
    collector.join(10)
    assert not collector.is_alive(), "the collection deadlocked on our locks"
    reaper.wait_idle()
    observer.wait_gone(sessions)
    assert rows_named(observer, "left-open") == 0
    assert backend_id(alias.wrapper()) != sessions[0]


def pool_stats(alias: PoolAlias) -> Any:
    return stats.stats_for(alias.name)


class SoftTimeLimit(Exception):
    """What Celery's soft time limit raises from its signal handler."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    """``alarm(seconds)``: raise SoftTimeLimit in this thread after that long."""

    def handler(signum: int, frame: Any) -> None:
        raise SoftTimeLimit

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    previous = signal.signal(signal.SIGALRM, handler)
    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_signal_during_the_check_at_close_still_gives_the_connection_back(
    pool_alias: PoolAliasFactory, alarm: Callable[[float], None]
) -> None:
    # After an error, close() asks whether the connection still works; a
    # Celery soft time limit firing meanwhile must not strand the loan.
    with tcp_proxy("127.0.0.1", int(pool_alias().settings_dict["PORT"])) as proxy:
        alias = pool_alias(
            pool_size=1, max_overflow=0, timeout=2,
            settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        )  # fmt: skip
        wrapper = alias.wrapper()
        with pytest.raises(ProgrammingError), wrapper.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        proxy.stall()
        alarm(0.3)
        with pytest.raises(SoftTimeLimit):
            wrapper.close()
        proxy.forward()
        assert django_sapool.get_stats(alias.name)["pool_used"] == 0
        wrapper.connection = None  # as Django leaves it after close()
        assert backend_id(wrapper) > 0  # the next request on this thread works
        wrapper.close()


@pytest.mark.direct_server(reason="waits for the server session to end")
@pytest.mark.psycopg3
def test_an_exception_from_a_signal_handler_during_the_reset_reaches_the_caller(
    pool_alias: PoolAliasFactory, observer: Observer, alarm: Callable[[float], None]
) -> None:
    with tcp_proxy("127.0.0.1", int(pool_alias().settings_dict["PORT"])) as proxy:
        alias = pool_alias(
            pool_size=1, max_overflow=0,
            settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        )  # fmt: skip
        wrapper = alias.wrapper()
        session = backend_id(wrapper)
        wrapper.set_autocommit(False)  # the reset will have a rollback to send
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
        proxy.stall()
        alarm(0.3)
        with pytest.raises(SoftTimeLimit):  # as with stock: the caller sees it
            wrapper.close()
        proxy.forward()
    observer.wait_gone([session])  # interrupted mid-reset: discarded
    assert django_sapool.get_stats(alias.name)["pool_size"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_close_inside_atomic_never_commits_the_blocks_work(
    engine: str, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # Even with reset_on_return="commit": atomic() promises all or nothing.
    alias = pool_alias(pool_size=1, reset_on_return="commit")
    with registered(make_wrapper(engine, alias)) as wrapper:
        with transaction.atomic(using=wrapper.alias), wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('half-done')")
            wrapper.close()
        wrapper.close()
    assert rows_named(observer, "half-done") == 0


def raised_after_close_in_atomic(wrapper: Any) -> type[BaseException]:
    raised: type[BaseException] = type(None)  # type: ignore[assignment]
    with registered(wrapper):
        try:
            with transaction.atomic(using=wrapper.alias):
                wrapper.ensure_connection()
                wrapper.close()
                with wrapper.cursor() as cursor:
                    cursor.execute("SELECT 1")
        except Exception as exc:  # compared with what stock raises
            raised = type(exc)
    wrapper.close()
    return raised


def test_a_query_after_close_inside_atomic_raises_what_stock_raises(
    pool_alias: PoolAliasFactory,
) -> None:
    alias = pool_alias(pool_size=1)
    stock = raised_after_close_in_atomic(make_wrapper("stock", alias))
    assert raised_after_close_in_atomic(make_wrapper("pooled", alias)) is stock


@pytest.mark.direct_server(reason="counts the server sessions of ours")
@pytest.mark.postgresql
def test_a_rotated_password_keeps_one_pool(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    """PostgreSQL only: the test server trusts every login, so any password
    logs in."""
    alias = pool_alias(pool_size=2, max_overflow=0)
    sessions: set[int] = set()
    for rotation in range(5):
        wrapper = alias.wrapper()
        wrapper.settings_dict["PASSWORD"] = f"token-{rotation}"
        sessions.add(backend_id(wrapper))
        wrapper.close()
    pools = [pool for pool in _registry.pools() if pool.alias == alias.name]
    assert len(pools) == 1
    assert len(observer.alive(sessions)) == 1


@pytest.mark.mysql
@pytest.mark.parametrize("reset", ["rollback", "commit", None])
def test_a_statement_interrupted_by_a_signal_leaves_nothing_for_the_next_borrower(
    reset: str | None, pool_alias: PoolAliasFactory, alarm: Callable[[float], None]
) -> None:
    # The handler's exception surfaces after the query was sent, before its
    # result was read: the next command on that connection would fail with
    # "Commands out of sync", so it must not be lent as it is.
    alias = pool_alias(pool_size=1, max_overflow=0, reset_on_return=reset)
    wrapper = alias.wrapper()
    alarm(0.2)
    with pytest.raises(SoftTimeLimit), wrapper.cursor() as cursor:
        cursor.execute("SELECT SLEEP(0.5), 1")
    wrapper.close()
    nxt = alias.wrapper()
    with nxt.cursor() as cursor:
        cursor.execute("SELECT 42")
        assert cursor.fetchone()[0] == 42
    nxt.close()


@pytest.mark.mysql
@pytest.mark.direct_server(reason="reads InnoDB's list of open transactions")
def test_each_connection_reads_its_own_transaction_state(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    """The status flags are read through each connection's own handle.

    Two connections, each returned once (their handles noted); then one is
    given back in a transaction the client library alone knows of, the other
    idle. Read through the wrong handle, the first would be pooled holding its
    transaction (and the row it wrote).
    """
    alias = pool_alias(pool_size=2, max_overflow=0)
    wrappers = [alias.wrapper(), alias.wrapper()]
    sessions = [backend_id(wrapper) for wrapper in wrappers]
    for wrapper in wrappers:
        wrapper.close()
    wrappers = [alias.wrapper(), alias.wrapper()]
    assert {backend_id(wrapper) for wrapper in wrappers} == set(sessions)
    idle, writer = wrappers  # the writer's handle was not the first one read
    with writer.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO testapp_item (name) VALUES ('own-handle')")
    idle.close()
    writer.close()
    assert observer.idle_in_transaction(sessions) == set()
    assert rows_named(observer, "own-handle") == 0, "rolled back on return"
    assert django_sapool.get_stats(alias.name)["returns_bad"] == 0


@pytest.mark.direct_server(reason="waits for the discarded session to end")
@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_an_error_while_giving_a_connection_back_loses_no_pool_slot(
    raised: type[BaseException], pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    """A listener's error (or a signal's) during the return discards the
    connection, whose state is then unknown, and frees its slot."""

    class Failing:
        def checkout_ended(self, *args: object) -> None:
            pass

        def connected(self, *args: object) -> None:
            pass

        def returned(self, *args: object) -> None:
            raise raised("a listener failed")

    alias = pool_alias(pool_size=1, max_overflow=0, timeout=1)
    listener = Failing()
    _listeners.add_listener(listener)
    try:
        wrapper = alias.wrapper()
        session = backend_id(wrapper)
        with pytest.raises(raised):
            wrapper.close()
    finally:
        _listeners.remove_listener(listener)
    observer.wait_gone([session])
    nxt = alias.wrapper()
    assert backend_id(nxt) != session  # the one slot, with a new connection
    nxt.close()
    assert django_sapool.get_stats(alias.name)["pool_used"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_connect_shows_the_drivers_error_near_the_top(
    engine: str, pool_alias: PoolAliasFactory, request: pytest.FixtureRequest
) -> None:
    # Someone debugging a wrong password or host reads the traceback: the
    # pool's machinery must not bury the driver's error.
    with tcp_proxy("127.0.0.1", int(pool_alias().settings_dict["PORT"])) as proxy:
        proxy.refuse()
        alias = pool_alias(settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)})
        wrapper = make_wrapper(engine, alias)
        if engine == "stock":
            wrapper.settings_dict.update(alias.settings_dict | {"OPTIONS": {}})
            wrapper.settings_dict["ENGINE"] = stock_settings()["ENGINE"]
        with pytest.raises(Error) as raised:
            wrapper.ensure_connection()
    driver_error = raised.value.__cause__
    assert driver_error is not None
    frames = traceback.extract_tb(driver_error.__traceback__)
    assert not [f for f in frames if "sqlalchemy" in f.filename]
    seen = request.config.stash.setdefault(_FRAMES, {})
    seen[engine] = len(frames)
    if len(seen) == 2:  # ours adds a few frames of the pool, no more
        assert seen["pooled"] <= seen["stock"] + 8, seen


_FRAMES = pytest.StashKey[dict[str, int]]()
