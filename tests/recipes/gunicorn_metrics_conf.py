"""gunicorn configuration of the Prometheus recipe (docs/observability.md).

PROMETHEUS_MULTIPROC_DIR names an empty directory, set before gunicorn starts.
"""

from __future__ import annotations

from typing import Any

from django_sapool.gunicorn import post_fork as sapool_post_fork
from django_sapool.gunicorn import worker_exit
from django_sapool.prometheus import child_exit, register

__all__ = ["child_exit", "post_fork", "worker_exit"]


def post_fork(server: Any, worker: Any) -> None:
    sapool_post_fork(server, worker)
    register()
