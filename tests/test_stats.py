"""get_stats() / pop_stats() agree with what the server saw."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import django_sapool
from django_sapool.stats import COUNTERS, GAUGES
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id
from tests.support.waiting import run_threads, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_keys_are_stable_and_all_present(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=2)
    alias.wrapper().ensure_connection()
    stats = django_sapool.get_stats(alias.name)
    assert list(stats) == [*GAUGES, *COUNTERS]
    assert all(isinstance(value, int) for value in stats.values())
    assert django_sapool.get_stats()[alias.name] == django_sapool.get_stats(alias.name)


@pytest.mark.direct_server(
    reason=("counts the server sessions our pool opened; PgBouncer reuses its own")
)
def test_counts_match_the_server_sessions(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=2, max_overflow=1, timeout=30)
    seen: set[int] = set()

    def request_cycles() -> None:
        wrapper = alias.wrapper()
        for _ in range(25):
            seen.add(backend_id(wrapper))
            wrapper.close()

    assert run_threads([request_cycles] * 4) == []
    stats = django_sapool.get_stats(alias.name)
    # Every server session we saw was opened once by the pool, and only those.
    assert stats["connections_num"] == len(seen)
    assert stats["requests_num"] == 100
    assert stats["requests_timeouts"] == stats["requests_errors"] == 0
    assert stats["pool_used"] == stats["pool_overflow"] == 0
    assert stats["requests_waiting"] == 0
    # Overflow connections were closed on return; the server notices soon.
    wait_until(
        lambda: len(observer.alive(seen)) == stats["pool_available"], "overflow ends"
    )
    alive = observer.alive(seen)
    assert stats["pool_available"] == stats["pool_size"] == len(alive) <= 2
    assert (stats["pool_min"], stats["pool_max"]) == (2, 3)
    # Four threads on a pool of three: some checkouts found no idle connection.
    assert stats["connections_num"] <= stats["requests_queued"] <= 100


def test_waiting_and_timeouts(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=5)
    holder = alias.wrapper()
    holder.ensure_connection()
    outcome: list[object] = []

    def waiter() -> None:
        wrapper = alias.wrapper()
        wrapper.ensure_connection()
        outcome.append(backend_id(wrapper))
        wrapper.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(
        lambda: django_sapool.get_stats(alias.name)["requests_waiting"] == 1,
        "the waiter shows as waiting",
        interval=0.01,
    )
    assert django_sapool.get_stats(alias.name)["pool_used"] == 1
    time.sleep(0.05)  # a wait long enough to show in milliseconds
    holder.close()
    thread.join()
    assert len(outcome) == 1
    stats = django_sapool.get_stats(alias.name)
    assert stats["requests_waiting"] == 0
    assert stats["requests_wait_ms"] >= 50, stats

    short = pool_alias(pool_size=1, max_overflow=0, timeout=0.2)
    holder = short.wrapper()
    holder.ensure_connection()
    with pytest.raises(django_sapool.PoolTimeout):
        short.wrapper().connect()
    stats = django_sapool.get_stats(short.name)
    assert (stats["requests_num"], stats["requests_timeouts"]) == (2, 1)
    assert stats["requests_errors"] == 1  # psycopg_pool's: timeouts included
    assert stats["requests_queued"] == 2  # the first opened one, then waited
    assert stats["requests_wait_ms"] >= 150
    holder.close()


@pytest.mark.session_bound(reason="in transaction mode the client never sees the kill")
def test_killed_connection_counts_as_lost(
    pool_alias: PoolAliasFactory, observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    alias = pool_alias(pool_size=1, pre_ping=True)
    wrapper = alias.wrapper()
    first = backend_id(wrapper)
    wrapper.close()
    observer.kill(first)
    observer.wait_gone([first])
    with caplog.at_level(logging.WARNING, logger="django_sapool"):
        second = backend_id(wrapper)
    wrapper.close()
    assert second != first
    stats = django_sapool.get_stats(alias.name)
    assert stats["connections_lost"] == 1
    assert stats["returns_bad"] == 0
    assert stats["connections_num"] == 2
    assert stats["connections_recycled"] == 0
    assert any("discarded" in r.getMessage() for r in caplog.records)


@pytest.mark.direct_server(reason="expects a new server session after recycling")
def test_recycled_connection_is_counted(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, recycle=1)
    wrapper = alias.wrapper()
    first = backend_id(wrapper)
    wrapper.close()
    time.sleep(1.2)
    second = backend_id(wrapper)
    wrapper.close()
    assert second != first
    observer.wait_gone([first])
    stats = django_sapool.get_stats(alias.name)
    assert (stats["connections_num"], stats["connections_recycled"]) == (2, 1)
    assert stats["connections_lost"] == 0


@pytest.mark.session_bound(
    reason=(
        "waits for the session of an earlier transaction to end; in transaction"
        " mode the open one may have run in another"
    )
)
def test_failed_reset_is_counted_and_the_session_closed(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, reset_on_return=None)
    wrapper = alias.wrapper()
    first = backend_id(wrapper)
    wrapper.set_autocommit(False)
    with wrapper.cursor() as cursor:  # a write: a transaction on every vendor
        cursor.execute("INSERT INTO testapp_item (name) VALUES (%s)", ["stats"])
    wrapper.close()  # returned inside a transaction: closed, not pooled
    observer.wait_gone([first])
    stats = django_sapool.get_stats(alias.name)
    assert stats["returns_bad"] == 1
    assert stats["pool_size"] == 0


def test_pop_stats_resets_counters_not_gauges(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=2)
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    popped = django_sapool.pop_stats(alias.name)
    assert popped["requests_num"] == popped["connections_num"] == 1
    after = django_sapool.get_stats(alias.name)
    assert all(after[key] == 0 for key in COUNTERS)
    assert after["pool_used"] == after["pool_size"] == 1
    wrapper.close()


def test_counters_survive_dispose(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=1)
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    wrapper.close()
    django_sapool.dispose(alias.name)
    stats = django_sapool.get_stats(alias.name)
    assert stats["requests_num"] == 1
    assert stats["pool_size"] == 0
    assert (stats["pool_min"], stats["pool_max"]) == (1, 11)  # still configured


def test_a_forked_child_starts_from_zero(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=1)
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without cleanup
        # The configured aliases, at zero; not the parent's other aliases.
        stats = django_sapool.get_stats()
        ok = alias.name not in stats and all(
            figures[key] == 0
            for figures in stats.values()
            for key in (*COUNTERS, "pool_used", "pool_size")
        )
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert django_sapool.get_stats(alias.name)["pool_used"] == 1
    wrapper.close()


def test_log_levels_as_documented(
    pool_alias: PoolAliasFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="django_sapool")
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=0.1)
    holder = alias.wrapper()
    holder.ensure_connection()
    with pytest.raises(django_sapool.PoolTimeout):
        alias.wrapper().connect()
    holder.close()
    django_sapool.dispose(alias.name)
    seen = [(r.levelname, r.getMessage().split(" ")[0]) for r in caplog.records]
    assert ("INFO", "Pool") in seen  # "Pool created ..." and "Pool disposed ..."
    assert ("DEBUG", "New") in seen  # "New connection for alias ..."
    # Checkouts and checkins are not logged: that would cost every request.
    assert not any(message == "Checked" for _, message in seen)
    assert ("WARNING", "No") in seen  # "No connection available ..."
    created = next(r for r in caplog.records if "Pool created" in r.getMessage())
    assert created.levelno == logging.INFO
    assert alias.name in created.getMessage()


def test_an_unlimited_pool_reports_no_maximum(pool_alias: PoolAliasFactory) -> None:
    # max_overflow=-1 means no limit, not pool_size - 1.
    alias = pool_alias(pool_size=1, max_overflow=-1)
    wrappers = [alias.wrapper() for _ in range(3)]
    for wrapper in wrappers:
        wrapper.ensure_connection()
    stats = django_sapool.get_stats(alias.name)
    assert (stats["pool_min"], stats["pool_max"]) == (1, -1)
    assert stats["pool_used"] == stats["pool_overflow"] + 1 == 3
    for wrapper in wrappers:
        wrapper.close()
