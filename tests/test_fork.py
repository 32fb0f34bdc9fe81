"""A forked child never touches an inherited connection; the parent's keep working.

Closing, pinging, rolling back or even garbage-collecting (mysqlclient sends
COM_QUIT) an inherited connection would speak on the parent's socket. The child
must open its own sessions, whether the fork ran Python's fork hooks
(``os.fork``, multiprocessing, gunicorn, Celery) or not (uWSGI forking from C).
"""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.db.utils import load_backend

import django_sapool
from django_sapool import _registry
from tests.support.forking import c_fork, in_child, python_fork, settle
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import VENDOR, Observer, backend_id, backend_id_sql
from tests.support.waiting import run_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]


@pytest.mark.direct_server(
    reason=(
        "tells the child's connections from the parent's by server session, and"
        " waits for the child's to end; PgBouncer reuses and keeps them"
    )
)
@pytest.mark.parametrize("fork", [python_fork, c_fork], ids=["os.fork", "C fork"])
@pytest.mark.parametrize("post_fork_dispose", [False, True])
def test_child_opens_its_own_sessions_and_parent_keeps_its_own(
    pool_alias: PoolAliasFactory,
    observer: Observer,
    fork: Callable[[], int],
    post_fork_dispose: bool,
) -> None:
    alias = pool_alias(pool_size=2, max_overflow=0)
    idle, lent = alias.wrapper(), alias.wrapper()
    parent_sessions = {backend_id(idle), backend_id(lent)}
    idle.close()  # one idle in the pool, one lent across the fork

    def child_work() -> list[int]:
        if post_fork_dispose:
            django_sapool.dispose()  # what a gunicorn post_fork hook does
        fresh = alias.wrapper()
        sessions = [backend_id(fresh), backend_id(lent)]  # lent: inherited wrapper
        fresh.close()
        lent.close()
        gc.collect()  # collecting inherited objects must not close them
        return sessions

    child_sessions = set(in_child(fork, child_work))
    assert len(child_sessions) == 2
    assert not child_sessions & parent_sessions

    # The parent's lent connection still works on the same server session.
    assert backend_id(lent) in parent_sessions
    lent.close()
    assert {backend_id(idle), backend_id(lent)} == parent_sessions
    assert observer.alive(parent_sessions) == parent_sessions
    observer.wait_gone(child_sessions)  # the child's sessions ended with it


def session_known_to_client(raw: Any) -> int:
    """The server session a driver connection is on, without a round trip."""
    if VENDOR == "mysql":
        return int(raw.thread_id())
    return int(raw.info.backend_pid)


@pytest.mark.direct_server(
    reason=(
        "tells the child's connections from the parent's by server session and "
        "reads what the parent's sessions ran last"
    )
)
def test_threads_racing_to_check_out_after_a_c_fork_never_get_the_parents_sessions(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    """uWSGI forks from C, so only a pid comparison notices the fork, and the
    child's threads may all make their first checkout at once. None may get
    the parent's pool (or a connection of it), and the child must end up with
    one pool for the alias, not one per thread that noticed the fork.

    Forked from the test's own thread: CPython cannot fork from C while
    another of its threads waits for the GIL (the child would hang)."""
    threads, forks = 16, 30
    alias = pool_alias(
        pool_size=4, max_overflow=threads, pre_ping=True, leak_timeout=60
    )
    held = [alias.wrapper() for _ in range(4)]
    parent_sessions = {backend_id(wrapper) for wrapper in held}
    for wrapper in held:
        wrapper.close()  # four idle connections the child's threads could take
    assert len(parent_sessions) == 4

    def child_work() -> dict[str, Any]:
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        start = threading.Barrier(threads)
        seen: list[tuple[int, int, int]] = []  # session, pool id, pool pid
        errors: list[str] = []

        def first_checkout() -> None:
            wrapper = alias.wrapper()
            try:
                start.wait(10)
                wrapper.ensure_connection()
                pool = wrapper._sapool_pool
                seen.append(
                    (session_known_to_client(wrapper.connection), id(pool), pool.pid)
                )
            except BaseException:
                errors.append(traceback.format_exc())
            finally:
                wrapper.close()

        run_threads([first_checkout] * threads, timeout=30)  # errors: kept above
        registered = [
            id(pool) for pool in _registry.pools() if pool.alias == alias.name
        ]
        return {
            "pid": os.getpid(),
            "seen": seen,
            "errors": errors,
            "registered": registered,
        }

    def parent_sessions_untouched() -> None:
        assert observer.alive(parent_sessions) == parent_sessions
        if VENDOR == "postgresql":  # nothing was sent on them by a child
            for session in parent_sessions:
                assert observer.last_statement(session) == backend_id_sql()

    settle()
    for _ in range(forks):
        report = in_child(c_fork, child_work, timeout=60)
        assert report["errors"] == []
        seen = report["seen"]
        assert len(seen) == threads
        assert not {session for session, _, _ in seen} & parent_sessions
        assert {pid for _, _, pid in seen} == {report["pid"]}
        assert len({pool for _, pool, _ in seen}) == 1
        assert report["registered"] == [seen[0][1]]
        parent_sessions_untouched()

    # The parent's sessions still serve the parent, and work.
    again = [alias.wrapper() for _ in range(4)]
    assert {backend_id(wrapper) for wrapper in again} == parent_sessions
    for wrapper in again:
        wrapper.close()


@pytest.mark.session_bound(
    reason=(
        "expects the same server sessions to serve after the fork; in "
        "transaction mode each transaction may run on another"
    )
)
@pytest.mark.parametrize("lend_one", [False, True], ids=["all idle", "one lent"])
def test_connections_of_threads_that_vanish_in_the_child(lend_one: bool) -> None:
    """Only the forking thread exists in the child; other threads' wrappers,
    and the connections they borrowed, are freed there at once. Freeing must
    not close them (mysqlclient) nor return them through the parent's pool."""
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {"sapool": {"pool_size": 2}},
    }
    lent_across_fork, may_finish = threading.Event(), threading.Event()
    sessions: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        # Like Django's `connections`, keep the wrappers in thread-local
        # storage only: the child clears it at fork, freeing the wrappers.
        local = threading.local()
        try:
            backend = load_backend(settings_dict["ENGINE"])
            local.idle = backend.DatabaseWrapper(
                copy.deepcopy(settings_dict), "vanishing"
            )
            local.held = backend.DatabaseWrapper(
                copy.deepcopy(settings_dict), "vanishing"
            )
            sessions.extend([backend_id(local.idle), backend_id(local.held)])
            local.idle.close()
            if not lend_one:
                local.held.close()
            lent_across_fork.set()
            may_finish.wait(30)
            # After the child is gone, both sessions still serve this process.
            after = [backend_id(local.held), backend_id(local.idle)]
            assert set(after) == set(sessions)
            if lend_one:
                assert after[0] == sessions[1]
            local.held.close()
            local.idle.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            django_sapool.dispose("vanishing")

    thread = threading.Thread(target=worker)
    thread.start()
    assert lent_across_fork.wait(30)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a multi-threaded process.
            warnings.simplefilter("ignore", DeprecationWarning)
            in_child(python_fork, gc.collect)
    finally:
        may_finish.set()
        thread.join()
    assert errors == []


def test_child_runs_no_pool_code_on_connections_it_inherits() -> None:
    """A parent thread may hold the pool's lock at the moment of fork. If the
    child returned that thread's borrowed connection to the inherited pool (as
    SQLAlchemy does when the borrower is garbage-collected), it would wait
    forever on a lock no thread of the child will release."""
    settings_dict = {**connections["default"].settings_dict, "OPTIONS": {"sapool": {}}}
    locked, may_finish = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        local = threading.local()  # freed in the child, like Django's wrappers
        try:
            backend = load_backend(settings_dict["ENGINE"])
            local.wrapper = backend.DatabaseWrapper(
                copy.deepcopy(settings_dict), "locked"
            )
            backend_id(local.wrapper)
            queue_lock = local.wrapper._sapool_pool._pool._pool.mutex
            with queue_lock:  # held across the fork
                locked.set()
                may_finish.wait(30)
            local.wrapper.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            django_sapool.dispose("locked")

    thread = threading.Thread(target=worker)
    thread.start()
    assert locked.wait(30)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            in_child(python_fork, gc.collect, timeout=10)
    finally:
        may_finish.set()
        thread.join()
    assert errors == []


def _multiprocessing_child(results: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    results.put(backend_id(connection))
    connection.close()


@pytest.mark.direct_server(
    reason=(
        "tells the children's connections apart by server session; PgBouncer "
        "hands an exited child's session to the next child"
    )
)
def test_multiprocessing_fork_children_use_djangos_connection_safely() -> None:
    parent_session = backend_id(connection)  # Django's own connection, held open
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [
        context.Process(target=_multiprocessing_child, args=(results,))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    sessions = {results.get(timeout=30) for _ in children}
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert parent_session not in sessions
    assert len(sessions) == 3
    assert backend_id(connection) == parent_session


EXITING_CHILD = """
import os, sys
import django
django.setup()
from django.db import connection

def session():
    with connection.cursor() as cursor:
        cursor.execute({sql!r})
        return cursor.fetchone()[0]

before = session()  # the parent's pooled connection, still lent
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: interpreter shutdown frees what it can
os.waitpid(pid, 0)
print(before, session())
"""


@pytest.mark.direct_server(reason="compares server session ids")
def test_a_child_that_exits_normally_leaves_the_parents_session() -> None:
    """Interpreter shutdown in a child (a gunicorn worker leaving, uWSGI
    reloading) must not free inherited connections: mysqlclient would send
    COM_QUIT on the parent's socket."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", EXITING_CHILD.format(sql=backend_id_sql())],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(root),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert before == after
