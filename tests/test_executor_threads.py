"""Executor threads that outlive a request: ASGI's ``thread_sensitive=False``.

Django closes a request's connections in the request's own thread. ORM work
sent to executor threads with ``sync_to_async(thread_sensitive=False)`` keeps
a connection per thread between requests: stock Django opens one per thread,
a pool of 2 + 1 behind six threads runs dry. Taking a connection from a live
thread is not safe (``django_sapool.idle``), so the pool names the holders
when it times out, and ``closes_idle_connections`` has the thread give it back.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connections

import django_sapool
from tests.support.pool_alias import PoolAlias, PoolAliasFactory
from tests.support.server import Observer, backend_id, stock_settings

pytestmark = [
    pytest.mark.direct_server(reason="counts server sessions by id"),
    pytest.mark.faults,
]

THREADS = 6


@pytest.fixture
def small_pool(
    django_db_blocker: Any, pool_alias: PoolAliasFactory
) -> Iterator[PoolAlias]:
    """A 2 + 1 pool, known to Django's settings as an application's alias is.

    Outside Django's test case, which forbids threads an alias it knows: the
    requests only ask the server for their session's id, no table needed.
    """
    alias = pool_alias(pool_size=2, max_overflow=1, timeout=2)
    with django_db_blocker.unblock():
        yield alias
    connections.settings.pop(alias.name, None)


def serve(
    using: str, settings_dict: dict[str, Any], requests: int, wrap: Callable[..., Any]
) -> tuple[list[BaseException], set[int]]:
    """``requests`` requests, six at a time, each running a query on one of
    the loop's six executor threads; the errors raised and the sessions used."""
    connections.settings[using] = copy.deepcopy(settings_dict)
    errors: list[BaseException] = []
    sessions: set[int] = set()
    # All six threads at once, each wave: the executor starts a thread only
    # when none is idle, and a busy machine could otherwise run a wave on fewer.
    together = threading.Barrier(THREADS, timeout=10)

    def work() -> None:
        together.wait()
        sessions.add(backend_id(connections[using]))

    async def request() -> None:
        try:
            await sync_to_async(wrap(work), thread_sensitive=False)()
        except Exception as error:
            errors.append(error)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(THREADS, thread_name_prefix="executor")
        )
        for _ in range(requests // THREADS):
            await asyncio.gather(*(request() for _ in range(THREADS)))

    asyncio.run(main())  # then the executor's threads end
    return errors, sessions


def test_stock_django_opens_a_connection_per_executor_thread(
    small_pool: PoolAlias, observer: Observer
) -> None:
    """The differential: stock never fails here, at one session per thread."""
    with warnings.catch_warnings():  # left open by the ended threads, as
        warnings.simplefilter("ignore", ResourceWarning)  # stock leaves them
        errors, sessions = serve(small_pool.name, stock_settings(), 24, lambda f: f)
        gc.collect()
    observer.wait_gone(sessions)
    assert errors == []
    assert len(sessions) == THREADS


def test_threads_that_keep_idle_connections_are_named_when_the_pool_times_out(
    small_pool: PoolAlias,
) -> None:
    errors, _ = serve(small_pool.name, small_pool.settings_dict, 6, lambda f: f)
    assert errors, "three threads hold the three connections, idle"
    assert all(isinstance(error, OperationalError) for error in errors)
    message = str(errors[0])
    assert "held by 'executor_" in message, message
    assert "close_idle_connections" in message


def test_executor_threads_that_give_back_never_exhaust_a_small_pool(
    small_pool: PoolAlias, observer: Observer
) -> None:
    requests = 60
    errors, sessions = serve(
        small_pool.name,
        small_pool.settings_dict,
        requests,
        django_sapool.closes_idle_connections,
    )
    stats = django_sapool.get_stats(small_pool.name)
    print(
        f"\n[fault] executor threads giving back: requests={requests}, "
        f"threads={THREADS}, pool=2+1, timeouts={stats['requests_timeouts']}, "
        f"connections_opened={stats['connections_num']}, "
        f"wait_ms={stats['requests_wait_ms']:.0f}"
    )
    assert errors == []
    assert stats["requests_timeouts"] == 0
    assert len(observer.alive(sessions)) <= 3  # overflow ones were closed
    assert stats["pool_used"] == 0
