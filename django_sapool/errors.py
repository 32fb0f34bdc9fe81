"""Exceptions raised by django_sapool."""

from __future__ import annotations

import functools
from types import ModuleType

from django.db import OperationalError


class SAPoolError(Exception):
    """Base class of django_sapool's own errors."""

    __module__ = "django_sapool"


class PoolTimeout(SAPoolError, OperationalError):
    """No pooled connection became free within the pool's ``timeout``.

    Backends raise a subclass that is also the driver's ``OperationalError``, so
    Django's error wrapper turns it into ``django.db.OperationalError`` with this
    exception as its ``__cause__``, exactly as for any other connect failure.
    """

    __module__ = "django_sapool"


@functools.cache
def pool_timeout_class(database: ModuleType) -> type[PoolTimeout]:
    """Return PoolTimeout specialised to the driver module ``database``."""
    return type(
        "PoolTimeout",
        (PoolTimeout, database.OperationalError),
        {"__module__": "django_sapool", "__doc__": PoolTimeout.__doc__},
    )
