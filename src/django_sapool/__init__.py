"""Pooled PostgreSQL and MySQL backends for Django, on SQLAlchemy's QueuePool."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._registry import dispose
from .config import PoolConfig
from .errors import PoolTimeout, SAPoolError, ServerUnavailable
from .idle import close_idle_connections, closes_idle_connections
from .stats import get_stats, pop_stats

try:
    __version__ = version("django-sapool")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "PoolConfig",
    "PoolTimeout",
    "SAPoolError",
    "ServerUnavailable",
    "__version__",
    "close_idle_connections",
    "closes_idle_connections",
    "dispose",
    "get_stats",
    "pop_stats",
]
