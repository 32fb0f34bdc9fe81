"""gunicorn settings for the example shop.

The one line that matters for django_sapool: the hooks. post_fork gives each
worker its own pool (fork is detected without it too); worker_exit closes the
worker's server sessions cleanly when it stops.
"""

from __future__ import annotations

from django_sapool.gunicorn import post_fork, worker_exit  # noqa: F401

wsgi_app = "shop.wsgi"
worker_class = "gthread"
workers = 2
threads = 4
