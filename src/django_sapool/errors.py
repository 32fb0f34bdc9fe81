"""Exceptions raised by django_sapool."""

from __future__ import annotations

from django.db import OperationalError


class SAPoolError(Exception):
    """Base class of django_sapool's own errors."""

    __module__ = "django_sapool"


class PoolTimeout(SAPoolError, OperationalError):
    """No pooled connection became free within the pool's ``timeout``.

    Backends raise a subclass that is also the driver's ``OperationalError``
    (defined once, in the backend's module: importable and picklable), so
    Django's error wrapper turns it into ``django.db.OperationalError`` with this
    exception as its ``__cause__``, exactly as for any other connect failure.
    """

    __module__ = "django_sapool"


class ServerUnavailable(SAPoolError, OperationalError):
    """The server refused or timed out a connect moments ago: failing fast.

    Raised, without a connect attempt, by checkouts that would need a new
    connection while the pool backs off after a failed one, so that requests
    fail at once instead of each waiting for a connect (or for ``timeout``).
    A driver ``OperationalError`` subclass, like PoolTimeout.
    """

    __module__ = "django_sapool"
