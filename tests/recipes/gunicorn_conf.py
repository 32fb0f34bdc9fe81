"""gunicorn configuration of the recipes: the recipe's one import, plus a probe.

The import is the whole recipe (docs/deployment.md). The wrapper is for the
test only: while the directory SAPOOL_RECIPES_EXITED_DIR exists, an
exiting worker drops a file named after its pid there once the recipe's
``worker_exit`` has run, then lingers a moment, so that the test can see the
worker's server sessions end while the process still exists.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django_sapool.gunicorn import post_fork
from django_sapool.gunicorn import worker_exit as recipe_worker_exit

__all__ = ["post_fork", "worker_exit"]

#: Seconds an exiting worker lingers after the recipe's worker_exit.
EXIT_PAUSE = 1.0


def worker_exit(server: Any, worker: Any) -> None:
    recipe_worker_exit(server, worker)
    exited = Path(os.environ.get("SAPOOL_RECIPES_EXITED_DIR") or "/nonexistent")
    if exited.is_dir():  # the test removes it when it has seen enough
        (exited / str(os.getpid())).touch()
        time.sleep(EXIT_PAUSE)
