"""Fixtures for tests against real servers.

Tests marked ``postgresql``, ``mysql`` or ``psycopg3`` run only in the matching
driver's run (they are deselected, not skipped, elsewhere). When the server is
unreachable its tests are skipped with the reason, except under ``CI=true``,
where any skip is a failure.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from django.db import connections
from django.db.utils import load_backend

import django_sapool
from tests import settings as test_settings
from tests.server import Observer

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_alias_numbers = itertools.count()


def pytest_report_header() -> list[str]:
    database = test_settings.DATABASE
    return [
        f"django_sapool driver: {test_settings.DRIVER} "
        f"({database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']})"
    ]


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    foreign = {"postgresql", "mysql", "psycopg3"} - {test_settings.VENDOR}
    if test_settings.DRIVER == "psycopg":
        foreign.discard("psycopg3")
    deselected = [
        item for item in items if any(item.get_closest_marker(m) for m in foreign)
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    reason = _server_unreachable()
    if reason and not IN_CI:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker("django_db"):
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true, which counts as a failure: {report.longrepr}"
        )
    return report


def _server_unreachable() -> str | None:
    """Why the configured server cannot be reached, or None if it can."""
    engine = "django.db.backends." + test_settings.VENDOR
    settings_dict = {**test_settings.DATABASE, "ENGINE": engine, "OPTIONS": {}}
    backend = load_backend(engine)
    probe = backend.DatabaseWrapper(
        {**connections["default"].settings_dict, **settings_dict}, alias="reachability"
    )
    try:
        probe.get_new_connection(probe.get_connection_params()).close()
    except Exception as exc:  # any failure means: no usable server here
        return f"{test_settings.VENDOR} server unreachable: {exc}"
    return None


class PoolAlias:
    """A database alias of its own, pooled with the given options, for one test."""

    def __init__(self, name: str, settings_dict: dict[str, Any]) -> None:
        self.name = name
        self.settings_dict = settings_dict
        self._wrappers: list[Any] = []

    def wrapper(self) -> Any:
        """A new DatabaseWrapper on this alias, as each thread of Django has."""
        backend = load_backend(self.settings_dict["ENGINE"])
        wrapper = backend.DatabaseWrapper(copy.deepcopy(self.settings_dict), self.name)
        self._wrappers.append(wrapper)
        return wrapper

    def close(self) -> None:
        for wrapper in self._wrappers:
            wrapper.inc_thread_sharing()  # closing from the test's thread
            wrapper.close()
        django_sapool.dispose(self.name)


@pytest.fixture
def pool_alias() -> Iterator[Any]:
    """Factory: ``pool_alias(pool_size=2, ...)`` returns a fresh PoolAlias.

    Keyword arguments are pool options; ``settings`` overrides other
    settings_dict keys; ``options`` adds driver OPTIONS.
    """
    made: list[PoolAlias] = []

    def make(
        *,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **pool: Any,
    ) -> PoolAlias:
        settings_dict = copy.deepcopy(connections["default"].settings_dict)
        settings_dict["OPTIONS"] = {**(options or {}), "sapool": pool}
        settings_dict.update(settings or {})
        alias = PoolAlias(f"pooled{next(_alias_numbers)}", settings_dict)
        made.append(alias)
        return alias

    yield make
    for alias in made:
        alias.close()


@pytest.fixture
def observer() -> Iterator[Observer]:
    watcher = Observer()
    yield watcher
    watcher.close()
