"""Threads that end without closing their connection give it back at once.

Django keeps a wrapper per thread, and the wrapper lives in reference cycles:
without help, a thread that ends holding a pooled connection (a
ThreadPoolExecutor inside a view, a fire-and-forget thread) keeps its slot
until a cyclic garbage collection. Every test here runs with the cyclic
collector disabled, so only the pool's own mechanism can give it back.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db.utils import load_backend

import django_sapool
from django_sapool._reaper import reaper
from tests.support.figures import figures
from tests.support.forking import in_child, python_fork
from tests.support.pool_alias import PoolAlias, PoolAliasFactory, thread_connection
from tests.support.server import (
    Observer,
    backend_id,
    stock_settings,
)
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(reason="counts server sessions by id"),
]


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cyclic collector off for the test, as between two collections."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def view(using: str, settings_dict: dict[str, Any], sessions: set[int]) -> list[int]:
    """A view that maps an ORM query over a ThreadPoolExecutor, never closing."""

    all_four = threading.Barrier(4, timeout=10)  # four threads, not one reused

    def query(n: int) -> int:
        all_four.wait()
        connection = thread_connection(using, settings_dict)
        count: int = Item.objects.using(using).filter(name=f"item {n}").count()
        sessions.add(backend_id(connection))
        return count

    with ThreadPoolExecutor(4) as executor:
        return list(executor.map(query, range(4)))


@pytest.mark.faults
@pytest.mark.parametrize("engine", ["stock", "sapool"])
@pytest.mark.usefixtures("no_gc")
def test_a_view_that_maps_queries_over_a_thread_pool_never_exhausts_the_pool(
    engine: str, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # The default pool (5 + 10): four threads per request would exhaust it
    # at the fourth request if ended threads kept their slots.
    alias = pool_alias(timeout=2)
    stock = engine == "stock"
    settings_dict = stock_settings() if stock else copy.deepcopy(alias.settings_dict)
    sessions: set[int] = set()
    # Stock leaves four server sessions per request until a collection.
    rounds = 4 if stock else 10
    for _ in range(rounds):
        assert view(alias.name, settings_dict, sessions) == [0, 0, 0, 0]
    if stock:
        assert len(sessions) == 4 * rounds, "stock opens a connection per thread"
        with warnings.catch_warnings():
            # psycopg 3 warns when it frees a connection left open.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        observer.wait_gone(sessions)
        return
    stats = django_sapool.get_stats(alias.name)
    figures(
        "threads that end without closing",
        requests=rounds,
        threads=4 * rounds,
        timeouts=stats["requests_timeouts"],
        wait_ms=round(stats["requests_wait_ms"]),
        connections_opened=stats["connections_num"],
    )
    assert stats["pool_used"] == 0
    assert stats["requests_timeouts"] == 0
    # Given back idle, each connection was lent again: no reconnects.
    assert stats["connections_num"] == len(sessions) <= 4
    assert observer.alive(sessions) == sessions


def borrow_in_a_thread(
    alias: PoolAlias, work: Any = None, share: bool = False
) -> tuple[int, Any]:
    """A thread makes a wrapper (Django's way), borrows, and ends holding it."""
    result: list[Any] = []

    def borrower() -> None:
        local = threading.local()  # the only reference, as in Django
        backend = load_backend(alias.settings_dict["ENGINE"])
        local.wrapper = backend.DatabaseWrapper(
            copy.deepcopy(alias.settings_dict), alias.name
        )
        if share:
            local.wrapper.inc_thread_sharing()
        result.append(backend_id(local.wrapper))
        if work is not None:
            work(local.wrapper)
        result.append(local.wrapper if share else None)

    thread = threading.Thread(target=borrower, name="borrower")
    thread.start()
    thread.join()
    return result[0], result[1]


@pytest.mark.usefixtures("no_gc")
def test_an_idle_connection_of_an_ended_thread_is_lent_again(
    pool_alias: PoolAliasFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="django_sapool")
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=5)
    session, _ = borrow_in_a_thread(alias)
    stats = django_sapool.get_stats(alias.name)
    assert stats["pool_used"] == 0, "back in the pool once the thread ended"
    assert backend_id(alias.wrapper()) == session
    assert django_sapool.get_stats(alias.name)["requests_wait_ms"] < 1000
    reaper.wait_idle()
    assert "thread 'borrower' ended without closing its connection" in caplog.text


@pytest.mark.usefixtures("no_gc")
def test_an_ended_threads_open_transaction_is_closed_with_its_connection(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # Its state is unknown without a round trip, and a finaliser sends
    # nothing: the slot is freed now and the reaper closes the connection,
    # so the server rolls the transaction back.
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=5)

    def leave_a_transaction_open(wrapper: Any) -> None:
        wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('left-open')")

    session, _ = borrow_in_a_thread(alias, leave_a_transaction_open)
    assert django_sapool.get_stats(alias.name)["pool_used"] == 0
    reaper.wait_idle()
    observer.wait_gone([session])
    assert not Item.objects.filter(name="left-open").exists()
    assert backend_id(alias.wrapper()) != session


@pytest.mark.usefixtures("no_gc")
def test_a_wrapper_shared_between_threads_keeps_its_connection(
    pool_alias: PoolAliasFactory,
) -> None:
    # inc_thread_sharing(): other threads may still use the wrapper (Django's
    # LiveServerTestCase shares the test's connection with its server thread).
    alias = pool_alias(pool_size=1, max_overflow=0)
    session, wrapper = borrow_in_a_thread(alias, share=True)
    assert django_sapool.get_stats(alias.name)["pool_used"] == 1
    assert backend_id(wrapper) == session, "still the loan it had"
    wrapper.close()
    wrapper.dec_thread_sharing()
    assert django_sapool.get_stats(alias.name)["pool_used"] == 0


@pytest.mark.usefixtures("no_gc")
def test_a_forked_child_leaves_the_loans_of_threads_it_lacks_alone(
    pool_alias: PoolAliasFactory,
) -> None:
    # A child has only the forking thread: Python frees the others' local
    # storage there, which finalises their _ThreadEnd. Their loans are the
    # parent's, on the parent's sockets.
    alias = pool_alias(pool_size=1, max_overflow=0)
    lent, forked = threading.Event(), threading.Event()
    sessions: list[int] = []

    def borrower() -> None:
        wrapper = alias.wrapper()
        sessions.append(backend_id(wrapper))
        lent.set()
        forked.wait(10)
        sessions.append(backend_id(wrapper))
        wrapper.close()

    thread = threading.Thread(target=borrower)
    thread.start()
    assert lent.wait(10)
    try:
        in_child(python_fork, lambda: None)
    finally:
        forked.set()
        thread.join()
    assert sessions[0] == sessions[1], "the parent's loan survived the child"


@pytest.mark.usefixtures("no_gc")
def test_a_wrapper_dropped_by_a_live_thread_comes_back_at_a_collection(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    # Not a thread's end: only the collector can tell that a wrapper is gone
    # (its reference cycles), and SQLAlchemy returns the connection then.
    alias = pool_alias(pool_size=1, max_overflow=0)
    backend = load_backend(alias.settings_dict["ENGINE"])
    wrapper = backend.DatabaseWrapper(copy.deepcopy(alias.settings_dict), alias.name)
    session = backend_id(wrapper)
    del wrapper
    assert django_sapool.get_stats(alias.name)["pool_used"] == 1
    gc.collect()
    assert django_sapool.get_stats(alias.name)["pool_used"] == 0
    reaper.wait_idle()
    observer.wait_gone([session])
