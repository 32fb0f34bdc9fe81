"""A task backend for tests/test_django_tasks.py (imported there only on 6.0+)."""

from __future__ import annotations

from django.tasks.backends.immediate import ImmediateBackend


class WorkerBackend(ImmediateBackend):
    """Stands for a worker's backend: it runs each task where ``enqueue()``
    is called, which the tests make a long-lived worker thread."""
