"""The Django 6.0 tasks recipe: ``close_idle_connections`` on the task signals.

Django closes connections around requests, not around tasks: a worker thread
that runs task after task keeps its connection between them. Connected to
``task_started`` and ``task_finished``, ``close_idle_connections`` gives it
back after every task, and leaves alone a connection in a transaction. For the
immediate backend, which runs a task inside its caller (a request), it does
nothing: the caller's connection, cursors and session stay its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

import django_sapool
from tests.support.server import backend_id
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.django_tasks,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(reason="compares server sessions"),
]


@pytest.fixture
def recipe() -> Iterator[None]:
    """docs/deployment.md's two lines, for the test."""
    from django.tasks.signals import task_finished, task_started

    task_started.connect(django_sapool.close_idle_connections)
    task_finished.connect(django_sapool.close_idle_connections)
    yield
    task_started.disconnect(django_sapool.close_idle_connections)
    task_finished.disconnect(django_sapool.close_idle_connections)


@pytest.fixture
def worker_backend(settings: Any) -> None:
    """Tasks go to a backend that stands for a worker's (testapp.task_backends);
    Django resets its task backends when the setting changes, and back."""
    backend = "tests.testapp.task_backends.WorkerBackend"
    settings.TASKS = {"default": {"BACKEND": backend}}


def run_in_a_worker_thread(tasks: int) -> list[dict[str, Any]]:
    """A long-lived thread runs ``tasks`` tasks; after each, what the pool
    says of its connections while the thread lives on (pool_used: the
    worker's, the loans of other threads left out)."""
    from tests.testapp.tasks import add_item

    seen: list[dict[str, Any]] = []
    # Lent to other threads (the test's own, say) while the worker runs.
    others = django_sapool.get_stats("default")["pool_used"]

    def worker() -> None:
        try:
            for n in range(tasks):
                result = add_item.enqueue(f"task {n}")
                stats = django_sapool.get_stats("default")
                seen.append(
                    {
                        "status": str(result.status),
                        "session": result.return_value,
                        "held": connection.connection is not None,
                        "pool_used": stats["pool_used"] - others,
                    }
                )
        finally:
            connection.close()

    thread = threading.Thread(target=worker, name="task worker")
    thread.start()
    thread.join(30)
    return seen


@pytest.mark.usefixtures("recipe", "worker_backend")
def test_a_worker_thread_gives_its_connection_back_after_every_task() -> None:
    seen = run_in_a_worker_thread(5)
    assert [s["status"] for s in seen] == ["SUCCESSFUL"] * 5
    assert not any(s["held"] for s in seen), seen
    assert all(s["pool_used"] == 0 for s in seen), seen
    # The pool is not rebuilt per task: its one idle connection serves them all.
    assert len({s["session"] for s in seen}) == 1
    print(
        f"\n[fault] Django tasks on a worker thread: tasks={len(seen)}, "
        f"held_between_tasks=0, sessions={len({s['session'] for s in seen})}"
    )
    assert Item.objects.filter(name__startswith="task ").count() == 5


@pytest.mark.usefixtures("worker_backend")
def test_without_the_recipe_the_worker_thread_keeps_its_connection() -> None:
    """What the recipe is for (and that the test above can fail)."""
    seen = run_in_a_worker_thread(2)
    assert all(s["held"] and s["pool_used"] >= 1 for s in seen), seen


@pytest.mark.usefixtures("recipe")
def test_a_task_run_inside_atomic_leaves_the_callers_transaction_alone() -> None:
    from tests.testapp.tasks import add_item

    with transaction.atomic():
        Item.objects.create(name="before the task")
        session = backend_id(connection)
        result = add_item.enqueue("in the transaction")
        assert result.return_value == session  # the same connection throughout
        assert backend_id(connection) == session
    assert (
        Item.objects.filter(name__in=["before the task", "in the transaction"]).count()
        == 2
    )


@pytest.mark.usefixtures("recipe")
def test_the_immediate_backend_leaves_the_callers_connection_alone() -> None:
    """Outside atomic() too: a request's cursor and session outlive its task."""
    from tests.testapp.tasks import add_item

    with connection.cursor() as cursor:
        session = backend_id(connection)
        result = add_item.enqueue("from a request")
        assert result.return_value == session
        cursor.execute("SELECT 1")  # the request's cursor still works
        assert backend_id(connection) == session
