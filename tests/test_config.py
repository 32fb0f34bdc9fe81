"""OPTIONS["sapool"] rules: a mistake names the alias, the key and what is allowed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_sapool import PoolConfig


def config(options: Any = None, **settings: Any) -> PoolConfig:
    settings_dict: dict[str, Any] = {"CONN_MAX_AGE": 0, "OPTIONS": {}, **settings}
    if options is not None:
        settings_dict["OPTIONS"] = {"sapool": options}
    return PoolConfig.from_settings("orders", settings_dict)


def test_defaults_follow_sqlalchemy() -> None:
    assert config() == PoolConfig(
        pool_size=5,
        max_overflow=10,
        timeout=30.0,
        recycle=-1,
        pre_ping=False,
        reset_on_return="rollback",
        use_lifo=False,
    )


def test_every_option_is_read() -> None:
    options: dict[str, Any] = {
        "pool_size": 3,
        "max_overflow": -1,
        "timeout": 2.5,
        "recycle": 600,
        "pre_ping": True,
        "reset_on_return": "discard",
        "use_lifo": True,
    }
    assert config(options) == PoolConfig(**options)


@pytest.mark.parametrize("mode", ["rollback", "commit", "discard", None])
def test_reset_modes(mode: str | None) -> None:
    assert config({"reset_on_return": mode}).reset_on_return == mode


@pytest.mark.parametrize(
    ("health_checks", "options", "expected"),
    [
        (False, {}, False),
        (True, {}, True),
        (True, {"pre_ping": False}, False),
        (False, {"pre_ping": True}, True),
    ],
)
def test_pre_ping_follows_conn_health_checks_unless_set(
    health_checks: bool, options: dict[str, Any], expected: bool
) -> None:
    assert config(options, CONN_HEALTH_CHECKS=health_checks).pre_ping is expected


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("pool_size", 0, "an integer >= 1"),
        ("pool_size", 2.0, "an integer >= 1"),
        ("pool_size", True, "an integer >= 1"),
        ("pool_size", "5", "an integer >= 1"),
        ("max_overflow", -2, "an integer >= 0, or -1 for no limit"),
        ("max_overflow", None, "an integer >= 0, or -1 for no limit"),
        ("timeout", 0, "a number of seconds > 0"),
        ("timeout", "30", "a number of seconds > 0"),
        ("recycle", 0, "a number of seconds > 0, or -1 to never recycle"),
        ("recycle", -5, "a number of seconds > 0, or -1 to never recycle"),
        ("pre_ping", 1, "True or False"),
        ("pre_ping", "yes", "True or False"),
        ("use_lifo", None, "True or False"),
        ("reset_on_return", "DISCARD", "one of 'rollback', 'commit', 'discard', None"),
        ("reset_on_return", True, "one of 'rollback', 'commit', 'discard', None"),
        ("reset_on_return", False, "one of 'rollback', 'commit', 'discard', None"),
    ],
)
def test_wrong_value_names_alias_key_and_choices(
    key: str, value: Any, allowed: str
) -> None:
    expected = (
        f"DATABASES['orders']['OPTIONS']['sapool'][{key!r}] must be {allowed}, "
        f"not {value!r}."
    )
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        config({key: value})


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        config({"poolsize": 3})
    message = str(excinfo.value)
    assert (
        "DATABASES['orders']['OPTIONS']['sapool'] has an unknown key 'poolsize'"
        in message
    )
    assert "Did you mean 'pool_size'?" in message
    assert (
        "Valid keys: max_overflow, pool_size, pre_ping, recycle, reset_on_return, "
        "timeout, use_lifo." in message
    )


def test_unknown_key_without_a_near_match() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown key 'zzz'\. Valid keys: "):
        config({"zzz": 1})


def test_options_must_be_a_dict() -> None:
    with pytest.raises(
        ImproperlyConfigured,
        match=re.escape(
            "DATABASES['orders']['OPTIONS']['sapool'] must be a dict of pool "
            "options, not True."
        ),
    ):
        config(True)


@pytest.mark.parametrize("max_age", [None, 60])
def test_persistent_connections_are_refused(max_age: int | None) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        config(CONN_MAX_AGE=max_age)
    assert str(excinfo.value).startswith(
        "DATABASES['orders']['CONN_MAX_AGE'] must be 0 with a django_sapool "
        f"ENGINE, not {max_age!r}"
    )


@pytest.mark.parametrize("value", [True, {"min_size": 2}])
def test_djangos_own_pool_is_refused(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        PoolConfig.from_settings(
            "orders", {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": value}}
        )
    message = str(excinfo.value)
    assert (
        "DATABASES['orders']['OPTIONS']['pool'] is Django's own connection pool"
        in message
    )
    assert "OPTIONS['sapool']" in message


@pytest.mark.parametrize("value", [False, None, {}])
def test_a_false_djangos_pool_only_means_not_djangos(value: Any) -> None:
    # Django reads a false OPTIONS["pool"] as "no pool" (its own tests use it).
    settings = {"CONN_MAX_AGE": 0, "OPTIONS": {"pool": value}}
    assert PoolConfig.from_settings("orders", settings) == PoolConfig()
