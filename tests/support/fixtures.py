"""The fixtures every server test may ask for (a plugin of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.pool_alias import PoolAlias, PoolAliasFactory, new_pool_alias
from tests.support.server import Observer


@pytest.fixture
def pool_alias() -> Iterator[PoolAliasFactory]:
    """``pool_alias(pool_size=2, ...)``: a fresh pooled alias (support.pool_alias)."""
    made: list[PoolAlias] = []

    def make(
        *,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **pool: Any,
    ) -> PoolAlias:
        alias = new_pool_alias(settings=settings, options=options, **pool)
        made.append(alias)
        return alias

    yield make
    for alias in made:
        alias.close()


@pytest.fixture
def observer() -> Iterator[Observer]:
    """An unpooled connection that reports what the server sees."""
    watcher = Observer()
    yield watcher
    watcher.close()
