"""How the suite runs: which tests a driver's run collects, and what a skip means.

Tests marked ``postgresql``, ``mysql`` or ``psycopg3`` run only in the matching
driver's run (they are deselected, not skipped, elsewhere); ``django_tasks``
ones only on Django 6.0 and later. When the server is
unreachable its tests are skipped with the reason, except under ``CI=true``,
where any skip is a failure. Tests under tests/logic/ are marked ``logic``:
they may not use the database (no ``django_db`` mark, no ``pool_alias`` or
``observer``), and a run of only them never contacts the server.
``direct_server`` and ``session_bound`` marks must say why, with ``reason=``.
The fixtures are in tests/support/fixtures.py and tests/support/recipes.py.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import django
import pytest
from django.db import connections
from django.db.utils import load_backend

from tests import settings as test_settings

pytest_plugins = ["tests.support.fixtures", "tests.support.recipes"]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
LOGIC = Path(__file__).parent / "logic"
#: Marks that tell the PgBouncer runs what to leave out; each says why.
REASONED = ("direct_server", "session_bound")
#: Fixtures that reach the server, which a server-free (logic) test may not use.
SERVER_FIXTURES = {"pool_alias", "observer", "db", "transactional_db"}


def pytest_report_header() -> list[str]:
    database = test_settings.DATABASE
    return [
        f"django_sapool driver: {test_settings.DRIVER} "
        f"({database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']})"
    ]


@pytest.hookimpl(tryfirst=True)  # before -m selects: it may select on ``logic``
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    foreign = {"postgresql", "mysql", "psycopg3"} - {test_settings.VENDOR}
    if test_settings.DRIVER == "psycopg":
        foreign.discard("psycopg3")
    if django.VERSION < (6, 0):
        foreign.add("django_tasks")
    deselected = [
        item for item in items if any(item.get_closest_marker(m) for m in foreign)
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    for item in items:
        _check_marks(item)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Skip the server's tests when it is unreachable (after every selection)."""
    items = session.items
    if not any(item.get_closest_marker("django_db") for item in items):
        return  # nothing selected needs the server: do not even look for it
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


def _check_marks(item: pytest.Item) -> None:
    """Mark tests/logic/ tests ``logic``, and hold every test to the rules above."""
    for name in REASONED:
        for mark in item.iter_markers(name):
            if not mark.kwargs.get("reason"):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{name} needs reason='why'"
                )
    if LOGIC not in Path(str(item.path)).parents:
        return
    item.add_marker(pytest.mark.logic)
    uses = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("django_db") or uses:
        raise pytest.UsageError(
            f"{item.nodeid}: a tests/logic test may not use the database "
            f"(django_db mark or fixtures {sorted(uses)}); move it out of tests/logic"
        )


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
