"""System checks, and what ``manage.py sapool_budget`` answers without a server."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

import django_sapool
from django_sapool._budget import per_process
from django_sapool.checks import settings_errors
from django_sapool.config import PoolConfig
from tests.settings import VENDOR


def ids(settings_dict: dict[str, Any]) -> list[str]:
    return [str(error.id) for error in settings_errors("reports", settings_dict)]


def test_a_good_configuration_has_no_errors() -> None:
    assert ids({"CONN_MAX_AGE": 0, "OPTIONS": {"sapool": {"pool_size": 3}}}) == []
    assert ids({"CONN_MAX_AGE": 0, "OPTIONS": {"pool": False}}) == []


def test_each_mistake_is_reported_at_once() -> None:
    settings_dict = {
        "CONN_MAX_AGE": 60,
        "OPTIONS": {"pool": True, "sapool": {"pool_sise": 3}},
    }
    errors = settings_errors("reports", settings_dict)
    assert [error.id for error in errors] == [
        "django_sapool.E001",
        "django_sapool.E002",
        "django_sapool.E003",
    ]
    assert "DATABASES['reports']['CONN_MAX_AGE']" in errors[0].msg
    assert "['pool']" in errors[1].msg
    assert "pool_sise" in errors[2].msg
    assert "pool_size" in errors[2].msg


def test_manage_py_check_passes_on_the_test_settings() -> None:
    call_command("check", stdout=StringIO())


@pytest.mark.parametrize(
    ("pool_size", "max_overflow", "threads", "expected"),
    [
        (4, 10, 2, 2),  # the threads are the limit
        (1, 0, 8, 1),  # the pool is
        (2, 3, 8, 5),
        (1, -1, 8, 8),  # no pool limit: one connection per thread
        (5, -1, 2, 2),
    ],
)
def test_budget_per_process_need(
    pool_size: int, max_overflow: int, threads: int, expected: int
) -> None:
    config = PoolConfig(pool_size=pool_size, max_overflow=max_overflow)
    assert per_process(config, threads) == expected


def test_pool_options_outside_sapool_are_reported_with_the_right_place() -> None:
    settings_dict = {
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool_size": 10, "sapool": {"max_overflow": 2}},
    }
    errors = settings_errors("reports", settings_dict)
    assert [error.id for error in errors] == ["django_sapool.E004"]
    assert errors[0].msg.startswith(
        "DATABASES['reports']['OPTIONS']['pool_size'] is a pool option, not a "
        "driver option: put it in OPTIONS['sapool']"
    )
    assert errors[0].hint == (
        "Pool options go in OPTIONS['sapool']; see "
        "https://github.com/django-sapool/django-sapool#configuration"
    )


def test_django_db_connection_pools_pool_options_are_reported() -> None:
    settings_dict = {"CONN_MAX_AGE": 0, "POOL_OPTIONS": {"POOL_SIZE": 10}}
    errors = settings_errors("reports", settings_dict)
    assert [error.id for error in errors] == ["django_sapool.E004"]
    assert "DATABASES['reports']['POOL_OPTIONS']" in errors[0].msg
    assert "DATABASES['reports']['OPTIONS']['sapool']" in errors[0].msg
    assert "{'sapool': {'pool_size': 10}} (POOL_SIZE->pool_size)" in errors[0].msg


def test_a_misplaced_option_does_not_hide_a_wrong_one_in_sapool() -> None:
    settings_dict = {
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool_size": 10, "sapool": {"pool_sise": 3}},
    }
    errors = settings_errors("reports", settings_dict)
    assert [error.id for error in errors] == [
        "django_sapool.E004",
        "django_sapool.E003",
    ]
    assert "pool_sise" in errors[1].msg
    assert errors[1].hint == (
        "The options of OPTIONS['sapool'] and their allowed values: "
        "https://github.com/django-sapool/django-sapool#configuration"
    )


def test_budget_refuses_an_unknown_alias_in_one_line() -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("sapool_budget", workers=2, aliases=["nosuch"], stdout=StringIO())
    assert str(excinfo.value) == (
        "unknown database alias 'nosuch'; DATABASES has 'default'"
    )


def test_budget_reports_an_unreachable_server_in_one_line(
    django_db_blocker: Any,
) -> None:
    # A port nothing listens on: the connect is refused at once.
    settings_dict = {**connections.settings["default"], "PORT": "1"}
    settings_dict["OPTIONS"] = {"sapool": {"pool_size": 2}}
    connections.settings["unreachable"] = settings_dict
    try:
        with django_db_blocker.unblock(), pytest.raises(CommandError) as excinfo:
            call_command(
                "sapool_budget", workers=2, aliases=["unreachable"], stdout=StringIO()
            )
    finally:
        connections["unreachable"].close()
        del connections["unreachable"]
        del connections.settings["unreachable"]
        django_sapool.dispose("unreachable")
    message = str(excinfo.value)
    assert message.startswith(
        f"cannot reach the server of database alias 'unreachable' ({VENDOR} "
        "127.0.0.1:1): "
    )
    assert "\n" not in message


def test_budget_says_so_when_no_alias_is_pooled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stock = f"django.db.backends.{VENDOR}"
    monkeypatch.setitem(connections.settings["default"], "ENGINE", stock)
    out = StringIO()
    call_command("sapool_budget", workers=2, stdout=out)
    assert out.getvalue() == (
        "No database alias uses a django_sapool ENGINE: no pool to check.\n"
    )
