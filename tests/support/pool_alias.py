"""A database alias of the test's own, pooled with the options the test gives.

The ``pool_alias`` fixture (tests/support/fixtures.py) is a ``PoolAliasFactory``:
``pool_alias(pool_size=2, ...)`` returns a fresh ``PoolAlias`` on the test
database. Keyword arguments are pool options (``OPTIONS['sapool']``);
``settings`` overrides other settings_dict keys (HOST, USER, ...); ``options``
adds driver OPTIONS. Its wrappers are closed and its pool disposed after the
test.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db import connections
from django.db.utils import load_backend
from django.utils.connection import ConnectionDoesNotExist

import django_sapool

_alias_numbers = itertools.count()


@dataclass
class PoolAlias:
    """A pooled alias: its name, its settings, and the wrappers made on it."""

    name: str
    settings_dict: dict[str, Any]
    _wrappers: list[Any] = field(default_factory=list, repr=False)

    def wrapper(self, cls: type | None = None, *, shared: bool = False) -> Any:
        """A new DatabaseWrapper on this alias, as each thread of Django has.

        ``cls``: a DatabaseWrapper class of the test's own (default: the
        ENGINE's). ``shared``: read this alias's settings dict itself, as
        every thread's wrapper reads Django's, so that a change made in place
        reaches them all (otherwise each wrapper has its own copy).
        """
        if cls is None:
            cls = load_backend(self.settings_dict["ENGINE"]).DatabaseWrapper
        settings_dict = (
            self.settings_dict if shared else copy.deepcopy(self.settings_dict)
        )
        wrapper = cls(settings_dict, self.name)
        self._wrappers.append(wrapper)
        return wrapper

    def close(self) -> None:
        for wrapper in self._wrappers:
            wrapper.inc_thread_sharing()  # closing from the test's thread
            wrapper.close()
        django_sapool.dispose(self.name)


class PoolAliasFactory(Protocol):
    """The type of the ``pool_alias`` fixture."""

    def __call__(
        self,
        *,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **pool: Any,
    ) -> PoolAlias: ...


def new_pool_alias(
    *,
    settings: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    **pool: Any,
) -> PoolAlias:
    """A PoolAlias on the test database (the ``default`` alias's settings)."""
    settings_dict = copy.deepcopy(connections["default"].settings_dict)
    settings_dict["OPTIONS"] = {**(options or {}), "sapool": pool}
    settings_dict.update(settings or {})
    return PoolAlias(f"pooled{next(_alias_numbers)}", settings_dict)


def thread_connection(using: str, settings_dict: dict[str, Any]) -> Any:
    """This thread's wrapper for ``using``, made the first time, kept as Django
    keeps its own: in the connection handler's thread-local storage.

    Not in ``connections.settings``: Django's test case forbids threads to
    connect to an alias it lists there and the test did not declare.
    """
    try:
        return connections[using]
    except ConnectionDoesNotExist:
        backend = load_backend(settings_dict["ENGINE"])
        connections[using] = backend.DatabaseWrapper(
            copy.deepcopy(settings_dict), using
        )
        return connections[using]


@contextlib.contextmanager
def registered(wrapper: Any) -> Iterator[Any]:
    """Make ``wrapper`` this thread's connection of its alias, so that
    ``transaction.atomic(using=wrapper.alias)`` finds it; yields it."""
    connections[wrapper.alias] = wrapper
    try:
        yield wrapper
    finally:
        del connections[wrapper.alias]
