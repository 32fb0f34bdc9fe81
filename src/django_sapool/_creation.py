"""Test databases: no pooled session may hold them during CREATE, clone or DROP."""

from __future__ import annotations

from typing import Any

from . import _registry


class PoolDisposingCreationMixin:
    """Dispose every pool around test-database creation, cloning and destruction.

    ``DROP DATABASE`` fails while pooled connections to it are open, and
    ``CREATE DATABASE ... TEMPLATE`` while the template has sessions. All
    aliases are disposed, not only this one: a test mirror alias holds
    connections to the same database under another name.
    """

    def _create_test_db(self, *args: Any, **kwargs: Any) -> Any:
        _registry.dispose()
        return super()._create_test_db(*args, **kwargs)  # type: ignore[misc]

    def _clone_test_db(self, *args: Any, **kwargs: Any) -> Any:
        _registry.dispose()
        return super()._clone_test_db(*args, **kwargs)  # type: ignore[misc]

    def _destroy_test_db(self, *args: Any, **kwargs: Any) -> Any:
        _registry.dispose()
        return super()._destroy_test_db(*args, **kwargs)  # type: ignore[misc]
