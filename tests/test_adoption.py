"""Mistakes made when adopting django_sapool: each names its fix, on every path.

A setting in the wrong place, Django's own pool left in OPTIONS, a driver not
installed, a pool too small: the message says what is wrong and what to do,
wherever Django first runs into it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError

import django_sapool
import django_sapool.backends
from tests.support.pool_alias import PoolAliasFactory

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


# Pool options in the wrong place, at the first connection -------------------


def test_a_pool_option_in_options_is_refused_before_the_driver_sees_it(
    pool_alias: PoolAliasFactory,
) -> None:
    wrapper = pool_alias(options={"pool_size": 3}).wrapper()
    with pytest.raises(ImproperlyConfigured) as excinfo:
        wrapper.ensure_connection()
    assert str(excinfo.value) == (
        f"DATABASES[{wrapper.alias!r}]['OPTIONS']['pool_size'] is a pool option, "
        "not a driver option: put it in OPTIONS['sapool'], as in 'OPTIONS': "
        "{'sapool': {'pool_size': 3}}."
    )
    assert wrapper.connection is None


def test_pool_options_of_django_db_connection_pool_are_refused_at_connect(
    pool_alias: PoolAliasFactory,
) -> None:
    alias = pool_alias(settings={"POOL_OPTIONS": {"POOL_SIZE": 3}})
    wrapper = alias.wrapper()
    with pytest.raises(ImproperlyConfigured, match=re.escape("['POOL_OPTIONS']")):
        wrapper.cursor()
    assert wrapper.connection is None


# Django's own OPTIONS["pool"]: our message, not "install psycopg[pool]" ----


def djangos_pool_message(alias: str) -> str:
    return (
        f"DATABASES[{alias!r}]['OPTIONS']['pool'] is Django's own connection pool "
        "and cannot be combined with a django_sapool ENGINE"
    )


# Django 5.1+ reads its pool from close_if_health_check_failed() (4.2 has no
# pool): there ours has none, so Django goes on to connect, and says ours.
_PATHS: dict[str, Callable[[Any], object]] = {
    "cursor": lambda wrapper: wrapper.cursor(),
    "ensure_connection": lambda wrapper: wrapper.ensure_connection(),
    "close_if_health_check_failed": lambda wrapper: (
        wrapper.close_if_health_check_failed(),
        wrapper.ensure_connection(),
    ),
}


@pytest.mark.postgresql
@pytest.mark.parametrize("reach", list(_PATHS.values()), ids=list(_PATHS))
def test_djangos_pool_option_gets_our_message_on_every_path(
    pool_alias: PoolAliasFactory, reach: Callable[[Any], object]
) -> None:
    alias = pool_alias(settings={"CONN_HEALTH_CHECKS": True}, options={"pool": True})
    wrapper = alias.wrapper()
    with pytest.raises(ImproperlyConfigured) as excinfo:
        reach(wrapper)
    assert str(excinfo.value).startswith(djangos_pool_message(alias.name))
    assert "psycopg_pool" not in str(excinfo.value)


def test_djangos_pool_property_is_none_for_a_pooled_engine(
    pool_alias: PoolAliasFactory,
) -> None:
    wrapper = pool_alias(options={"pool": False}).wrapper()
    assert wrapper.pool is None
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    wrapper.close()


# A driver not installed: Django's message and the extra to install --------


def import_without(backend: str, *modules: str) -> str:
    """Import our ``backend`` in a fresh interpreter where ``modules`` are absent."""
    script = textwrap.dedent(
        f"""
        import sys
        for name in {modules!r}:
            sys.modules[name] = None
        from django.conf import settings
        settings.configure()
        from django.core.exceptions import ImproperlyConfigured
        try:
            import django_sapool.backends.{backend}.base
        except ImproperlyConfigured as exc:
            print(exc, end="")
        else:
            print(django_sapool.backends.__file__, end="")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("backend", ["postgresql", "postgis"])
def test_no_postgresql_driver_names_the_extra(backend: str) -> None:
    assert import_without(backend, "psycopg", "psycopg2") == (
        "Error loading psycopg2 or psycopg module\n"
        "To install a driver django_sapool supports: "
        'pip install "django-sapool[psycopg]" (or "django-sapool[psycopg2]")'
    )


@pytest.mark.parametrize("backend", ["mysql", "mysqlgis"])
def test_no_mysql_driver_names_the_extra(backend: str) -> None:
    assert import_without(backend, "MySQLdb") == (
        "Error loading MySQLdb module.\nDid you install mysqlclient?\n"
        "To install a driver django_sapool supports: "
        'pip install "django-sapool[mysqlclient]"'
    )


def test_the_subprocess_imports_the_package_under_test() -> None:
    imported = Path(import_without("postgresql"))
    assert imported == Path(django_sapool.backends.__file__)


# The tests run against the installed package ---------------------------------


def test_the_installed_package_ships_its_type_information() -> None:
    assert (resources.files("django_sapool") / "py.typed").is_file()


@pytest.mark.skipif(
    not os.environ.get("NOX_CURRENT_SESSION"), reason="nox installs a wheel"
)
def test_under_nox_the_package_comes_from_the_wheel_not_the_source_tree() -> None:
    # A module or data file missing from the wheel fails the suite, instead
    # of being found in src/ (editable installs, pythonpath) and passing.
    installed = Path(django_sapool.__file__).resolve()
    assert ROOT / "src" not in installed.parents, installed
    assert installed.parent.parent.name == "site-packages", installed


# An exhausted pool says what to do -----------------------------------------


def test_pool_timeout_ends_with_what_to_do(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=0.2)
    holder, waiter = alias.wrapper(), alias.wrapper()
    holder.ensure_connection()
    with pytest.raises(OperationalError) as excinfo:
        waiter.ensure_connection()
    assert isinstance(excinfo.value.__cause__, django_sapool.PoolTimeout)
    message = str(excinfo.value)
    assert message.startswith(
        f"No connection available for database alias {alias.name!r} after waiting "
    )
    holders = "held by 'MainThread' for "  # the test's thread holds it
    assert "pool_size=1, max_overflow=0, 1 checked out, " + holders in message
    assert message.endswith(
        " s. Raise pool_size/max_overflow, lower threads per process, or give "
        "idle connections back (django_sapool.close_idle_connections)."
    )
