"""Faults: a server that is down or stalled, an exhausted pool, failing borrowers.

Each scenario drives traffic through our backend against the real server (a
TCP proxy of our own in between where the network must misbehave) and prints
its figures: requests attempted, succeeded, failed, and what the server saw.
Run alone with ``nox -s faults``; they are part of ``nox -s tests`` too.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import pickle
import threading
import time
from typing import Any

import pytest
from django.db import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    transaction,
)

import django_sapool
from tests.support.figures import figures
from tests.support.pool_alias import PoolAlias, PoolAliasFactory
from tests.support.server import Observer, Peak, backend_id
from tests.support.stand_ins import Interrupted
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import run_threads, threads_running, wait_until
from tests.testapp.models import Item

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]


def attempt(alias: PoolAlias) -> tuple[bool, float, BaseException | None]:
    """One request cycle: (succeeded, seconds it took, the error if any)."""
    wrapper = alias.wrapper()
    started = time.monotonic()
    try:
        backend_id(wrapper)
        return True, time.monotonic() - started, None
    except OperationalError as exc:
        return False, time.monotonic() - started, exc
    finally:
        wrapper.close()


def failed_fast(error: BaseException | None) -> bool:
    """Django's OperationalError caused by our ServerUnavailable?"""
    cause = getattr(error, "__cause__", None)
    return isinstance(cause, django_sapool.ServerUnavailable)


def test_server_down_at_start_fails_fast_then_recovers(
    pool_alias: PoolAliasFactory, proxy: TcpProxy, observer: Observer
) -> None:
    proxy.refuse()
    alias = pool_alias(
        pool_size=2, timeout=30, settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)}
    )
    outcomes: list[tuple[bool, float, BaseException | None]] = []

    def requests() -> None:
        for _ in range(10):
            outcomes.append(attempt(alias))
            time.sleep(0.02)

    assert run_threads([requests] * 4) == []
    stats = django_sapool.get_stats(alias.name)
    fast = [o for o in outcomes if failed_fast(o[2])]
    figures(
        "server down at start",
        attempted=len(outcomes),
        succeeded=sum(o[0] for o in outcomes),
        failed_fast=len(fast),
        connect_attempts=stats["connections_errors"],
        slowest_s=round(max(o[1] for o in outcomes), 3),
    )
    assert not any(ok for ok, _, _ in outcomes)
    # A clear error at once, never a wait for the pool's 30 s timeout.
    assert max(seconds for _, seconds, _ in outcomes) < 2
    assert all(isinstance(error, OperationalError) for _, _, error in outcomes)
    assert stats["connections_errors"] <= len(outcomes)
    assert all("unreachable" in str(error) for _, _, error in fast)

    proxy.forward()  # the server is back: the very next request works
    ok, _, error = attempt(alias)
    assert ok, error
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    wrapper.close()
    assert observer.alive([session]) == {session}


def test_while_connects_hang_one_checkout_at_a_time_tries(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    """A server that never answers: one request waits connect_timeout, not all."""
    proxy.stall()
    alias = pool_alias(
        pool_size=8, unreachable_wait=0.3,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        options={"connect_timeout": 2},
    )  # fmt: skip
    assert not attempt(alias)[0]  # the first failure closes the gate
    outcomes: list[tuple[bool, float, BaseException | None]] = []
    assert run_threads([lambda: outcomes.append(attempt(alias))] * 8) == []
    stats = django_sapool.get_stats(alias.name)
    fast = sorted(seconds for _, seconds, error in outcomes if failed_fast(error))
    figures(
        "connects hang (8 requests at once, connect_timeout=2, unreachable_wait=0.3)",
        attempted=len(outcomes),
        succeeded=sum(o[0] for o in outcomes),
        failed_fast=len(fast),
        fast_slowest_s=round(max(fast), 2),
        connect_attempts=stats["connections_errors"],
        slowest_s=round(max(o[1] for o in outcomes), 2),
    )
    assert not any(ok for ok, _, _ in outcomes)
    assert stats["connections_errors"] == 2  # the first request and one probe
    assert len(fast) == 7
    assert all(0.25 < seconds < 1.5 for seconds in fast)

    proxy.forward()
    ok, _, error = attempt(alias)
    assert ok, error


@pytest.mark.direct_server(reason="tells connections apart by server session")
def test_an_idle_connection_is_lent_while_connects_fail(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    """Failing fast is about new connections only; a pooled one is still lent."""
    alias = pool_alias(
        pool_size=2, settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)}
    )
    holder = alias.wrapper()
    session = backend_id(holder)  # the pool's only connection, checked out
    proxy.refuse(drop_existing=False)  # new connections fail from now on
    assert not attempt(alias)[0]  # needed a new connection: closes the gate
    holder.close()  # the healthy one goes back to the pool
    wrapper = alias.wrapper()
    assert backend_id(wrapper) == session  # lent at once, no connect tried
    wrapper.close()
    stats = django_sapool.get_stats(alias.name)
    assert stats["connections_errors"] == 1


@pytest.mark.parametrize("stage", ["pre-ping", "reset"])
def test_a_stalled_network_cannot_hang_the_pools_round_trips(
    pool_alias: PoolAliasFactory, proxy: TcpProxy, stage: str
) -> None:
    """The network stops passing bytes on an open connection: cut, not hung."""
    alias = pool_alias(
        pool_size=2, pre_ping=True, ping_timeout=1, unreachable_wait=0.3,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        options={"connect_timeout": 2},
    )  # fmt: skip
    wrapper = alias.wrapper()
    if stage == "pre-ping":
        backend_id(wrapper)
        wrapper.close()  # one idle pooled connection
        proxy.stall()
        ok, seconds, error = attempt(alias)  # ping is cut; the reconnect stalls
        assert not ok
        assert isinstance(error, OperationalError)
        assert 0.9 < seconds < 1 + 2 + 2  # ping_timeout + connect_timeout + slack
    else:
        wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:  # the reset must roll this back
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('stalled')")
        proxy.stall()
        started = time.monotonic()
        wrapper.close()  # gives it back; the rollback hangs and is cut
        seconds = time.monotonic() - started
        assert 0.9 < seconds < 3
    stats = django_sapool.get_stats(alias.name)
    figures(
        f"network stalls under an open connection, at the {stage}",
        seconds=round(seconds, 2),
        discarded=stats["connections_lost"] + stats["returns_bad"],
        connections_open=stats["pool_size"],
    )
    assert stats["pool_size"] == 0  # cut and discarded

    proxy.forward()  # the network is back: so is the pool
    ok, _, error = attempt(alias)
    assert ok, error
    assert not Item.objects.filter(name="stalled").exists()  # never committed


def test_a_stalled_connect_is_bounded_by_connect_timeout(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    proxy.stall()  # the handshake completes, the server never answers
    alias = pool_alias(
        pool_size=1,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        options={"connect_timeout": 2},
    )
    ok, seconds, error = attempt(alias)
    figures("stalled connect", succeeded=ok, seconds=round(seconds, 2))
    assert not ok
    assert isinstance(error, OperationalError)
    assert 1.5 < seconds < 6  # the driver's connect_timeout, not forever


def test_connect_timeout_is_set_unless_given(pool_alias: PoolAliasFactory) -> None:
    assert driver_params(pool_alias().wrapper())["connect_timeout"] == 10
    given = pool_alias(options={"connect_timeout": 3}).wrapper()
    assert driver_params(given)["connect_timeout"] == 3


def driver_params(wrapper: Any) -> dict[str, Any]:
    """The parameters the driver gets when the pool opens a connection."""
    params: dict[str, Any] = wrapper.sapool_connect_params(
        wrapper.get_connection_params()
    )
    return params


@pytest.mark.direct_server(reason="counts our sessions on the server")
def test_exhaustion_under_50_threads(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=2, max_overflow=1, timeout=0.5)
    baseline = observer.sessions_on_database() | {observer.own_id}
    outcomes: list[tuple[str, float]] = []

    def request() -> None:
        wrapper = alias.wrapper()
        started = time.monotonic()
        try:
            backend_id(wrapper)
            time.sleep(0.1)  # the view's work, connection held
            outcomes.append(("ok", time.monotonic() - started))
        except OperationalError as exc:
            kind = type(exc.__cause__).__name__
            outcomes.append((kind, time.monotonic() - started))
        finally:
            wrapper.close()

    peak = Peak()
    with peak.watching(lambda watcher: len(watcher.sessions_on_database() - baseline)):
        assert run_threads([request] * 50) == []
    stats = django_sapool.get_stats(alias.name)
    timeouts = [seconds for kind, seconds in outcomes if kind == "PoolTimeout"]
    figures(
        "exhaustion, 50 threads on pool_size=2 max_overflow=1 timeout=0.5",
        attempted=len(outcomes),
        succeeded=len(outcomes) - len(timeouts),
        timed_out=len(timeouts),
        server_sessions_max=peak.most,
        checked_out_after=stats["pool_used"],
    )
    assert len(outcomes) == 50
    assert {kind for kind, _ in outcomes} <= {"ok", "PoolTimeout"}
    assert timeouts, "50 threads on 3 connections must time some out"
    assert all(0.4 < seconds < 2.0 for seconds in timeouts)  # about `timeout`
    assert peak.most <= 3
    assert stats["pool_used"] == 0
    # The overflow connection was closed on return; the server notices soon.
    wait_until(
        lambda: len(observer.sessions_on_database() - baseline) <= 2,
        "the overflow session ends",
    )
    left = observer.sessions_on_database() - baseline
    assert observer.idle_in_transaction(left) == set()


class ViewCrashed(Exception):
    """An exception in a view, inside atomic()."""


def write_then_fail(error: type[BaseException]) -> None:
    with transaction.atomic():
        Item.objects.create(name="half-written")
        raise error


def write_twice(*names: str) -> None:
    with transaction.atomic():
        for name in names:
            Item.objects.create(name=name)


@pytest.mark.parametrize("error", [ViewCrashed, Interrupted])
def test_a_borrower_failing_mid_transaction_leaves_nothing(
    observer: Observer, error: type[BaseException]
) -> None:
    session = backend_id(connection)
    with pytest.raises(error):
        write_then_fail(error)
    connection.close()  # the request ends: back to the pool
    assert observer.idle_in_transaction([session]) == set()
    assert not Item.objects.filter(name="half-written").exists()  # next request
    assert observer.alive([session]) == {session}  # rolled back and kept
    connection.close()


def test_an_integrity_error_in_atomic_is_rolled_back(observer: Observer) -> None:
    Item.objects.create(name="taken")
    session = backend_id(connection)
    with pytest.raises(IntegrityError):
        write_twice("other", "taken")
    connection.close()
    assert observer.idle_in_transaction([session]) == set()
    assert list(Item.objects.values_list("name", flat=True)) == ["taken"]
    connection.close()


@pytest.mark.direct_server(
    reason=("kills our server sessions; behind PgBouncer they are its own")
)
@pytest.mark.parametrize("pre_ping", [False, True], ids=["no pre_ping", "pre_ping"])
def test_sessions_killed_under_load(
    pool_alias: PoolAliasFactory, observer: Observer, pre_ping: bool
) -> None:
    """Every server session of ours is killed while 8 threads send requests.

    A dead connection fails at most one request (the one using it, or without
    pre_ping the next to borrow it) and is never lent again; every row a
    successful request wrote is there afterwards.
    """
    alias = pool_alias(pool_size=4, max_overflow=4, pre_ping=pre_ping)
    baseline = observer.sessions_on_database() | {observer.own_id}
    prefix = f"kill-{pre_ping}"
    stop = threading.Event()
    killed_at: list[float] = []
    outcomes: list[tuple[bool, float, int | None]] = []  # ok, started, session
    lock = threading.Lock()

    def requests(thread: int) -> None:
        wrapper = alias.wrapper()
        for number in range(10_000):
            if stop.is_set():
                break
            started, session, ok = time.monotonic(), None, False
            try:
                session = backend_id(wrapper)
                with wrapper.cursor() as cursor:
                    cursor.execute(
                        "INSERT INTO testapp_item (name) VALUES (%s)",
                        [f"{prefix}-{thread}-{number}"],
                    )
                ok = True
            except OperationalError:
                pass
            finally:
                wrapper.close()
            with lock:
                outcomes.append((ok, started, session))
            time.sleep(0.002)

    with threads_running(functools.partial(requests, n) for n in range(8)) as errors:
        try:
            time.sleep(0.5)
            victims = observer.sessions_on_database() - baseline
            for session in victims:
                with contextlib.suppress(DatabaseError):  # it may have just ended
                    observer.kill(session)
            observer.wait_gone(victims)
            killed_at.append(time.monotonic())
            time.sleep(0.5)
        finally:
            stop.set()
    assert errors == []

    failed = [o for o in outcomes if not o[0]]
    after_kill = [o for o in outcomes if o[1] > killed_at[0]]
    rows = observer.value(
        "SELECT COUNT(*) FROM testapp_item WHERE name LIKE %s", [prefix + "-%"]
    )
    figures(
        f"all sessions killed under load ({'pre_ping' if pre_ping else 'no pre_ping'})",
        attempted=len(outcomes),
        succeeded=len(outcomes) - len(failed),
        failed=len(failed),
        killed=len(victims),
        rows_acknowledged=len(outcomes) - len(failed),
        rows_found=rows,
        sessions_after=len(observer.sessions_on_database() - baseline),
    )
    assert victims
    assert len(failed) <= len(victims)  # each dead connection fails once at most
    # No killed session is lent again after the kill.
    assert not {o[2] for o in after_kill if o[0]} & victims
    if pre_ping:  # requests that start after the kill all succeed
        assert all(ok for ok, _, _ in after_kill)
    # Nothing committed is lost. A statement the kill cut off after the server
    # committed it but before the client heard so fails and is still written:
    # no client can tell, so at most one extra row per failed request.
    succeeded = len(outcomes) - len(failed)
    assert succeeded <= rows <= succeeded + len(failed)
    assert sum(ok for ok, _, _ in after_kill) > 0  # traffic resumed


def test_past_the_pools_capacity_a_failing_server_still_fails_fast(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    # More requests than connections while the server refuses them: those
    # waiting for a slot must not wait the pool's timeout for a connection
    # that will never come back, only unreachable_wait.
    proxy.refuse()
    alias = pool_alias(
        pool_size=2, max_overflow=1, timeout=10, unreachable_wait=0.5,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
    )  # fmt: skip
    start = threading.Barrier(12)
    results: list[tuple[bool, float, BaseException | None]] = []

    def request() -> None:
        start.wait()
        results.append(attempt(alias))

    assert run_threads([request] * 12, timeout=30) == []
    slowest = max(seconds for _, seconds, _ in results)
    figures(
        "12 requests, pool 2+1, server refusing",
        failed=sum(not ok for ok, _, _ in results),
        slowest_s=round(slowest, 2),
        failed_without_trying=sum(failed_fast(error) for _, _, error in results),
    )
    assert len(results) == 12
    assert not any(ok for ok, _, _ in results)
    assert slowest < 2.5, "a request waited for the pool's timeout"


def test_djangos_check_after_an_error_is_bounded_by_ping_timeout(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    # At the end of a request with an error, Django asks is_usable(): on a
    # stalled network that round trip must be cut like the pool's own.
    alias = pool_alias(
        pool_size=1, ping_timeout=1,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        options={"connect_timeout": 2},
    )  # fmt: skip
    wrapper = alias.wrapper()
    with pytest.raises(DatabaseError), wrapper.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert wrapper.errors_occurred
    proxy.stall()
    finished: list[float] = []

    def request_end() -> None:
        started = time.monotonic()
        wrapper.close_if_unusable_or_obsolete()
        finished.append(time.monotonic() - started)

    wrapper.inc_thread_sharing()
    thread = threading.Thread(target=request_end, daemon=True)
    thread.start()
    thread.join(8)
    figures("is_usable() on a stalled network", seconds=finished or "hung")
    proxy.forward()
    assert finished, "Django's is_usable() hung"
    assert finished[0] < 3
    assert django_sapool.get_stats(alias.name)["pool_size"] == 0


def test_pool_errors_survive_a_pickle_round_trip(
    pool_alias: PoolAliasFactory, proxy: TcpProxy
) -> None:
    # Celery result backends and multiprocessing pickle exceptions.
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=0.2)
    holder = alias.wrapper()
    holder.ensure_connection()
    exhausted = attempt(alias)[2]
    holder.close()
    proxy.refuse()
    failing = pool_alias(
        pool_size=1, max_overflow=0, unreachable_wait=0.3,
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
    )  # fmt: skip
    errors: list[BaseException | None] = []
    # A checkout fails fast only on a failure newer than itself: four at once
    # usually give one, but a slow scheduler may let each try in turn.
    for _ in range(5):
        start = threading.Barrier(4)

        def request(start: threading.Barrier = start) -> None:
            start.wait()
            errors.append(attempt(failing)[2])

        assert run_threads([request] * 4, timeout=10) == []
        if any(failed_fast(error) for error in errors):
            break
    unavailable = next(error for error in errors if failed_fast(error))
    for error, base in [
        (exhausted, django_sapool.PoolTimeout),
        (unavailable, django_sapool.ServerUnavailable),
    ]:
        cause = getattr(error, "__cause__", None)
        assert isinstance(cause, base), error
        copy = pickle.loads(pickle.dumps(cause))
        assert type(copy) is type(cause)
        assert isinstance(copy, holder.Database.OperationalError)
        assert str(copy) == str(cause)
        module = importlib.import_module(type(cause).__module__)
        assert getattr(module, type(cause).__qualname__) is type(cause)
