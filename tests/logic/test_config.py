"""OPTIONS["sapool"] rules: a mistake names the alias, the key and what is allowed."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_sapool import PoolConfig
from django_sapool.config import DRIVER_OPTIONS, MISPLACED_KEYS

LEAK_TIMEOUT_RULE = "a number of seconds > 0, or None to not watch for leaks"


def config(options: Any = None, **settings: Any) -> PoolConfig:
    settings_dict: dict[str, Any] = {"CONN_MAX_AGE": 0, "OPTIONS": {}, **settings}
    if options is not None:
        settings_dict["OPTIONS"] = {"sapool": options}
    return PoolConfig.from_settings("orders", settings_dict)


PRE_PING_ALLOWED = (
    "True (ping at every checkout), False (never), or a number of seconds > 0 "
    "(ping a connection idle in the pool at least that long)"
)


def test_defaults_follow_sqlalchemy() -> None:
    assert config() == PoolConfig(
        pool_size=5,
        max_overflow=10,
        timeout=30.0,
        recycle=-1,
        pre_ping=0.5,
        reset_on_return="rollback",
        use_lifo=False,
        recycle_jitter=0.1,
        leak_timeout=None,
        prewarm=0,
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
        "recycle_jitter": 0.25,
        "leak_timeout": 30,
        "prewarm": 2,
        "unreachable_wait": 0.5,
        "ping_timeout": 3,
    }
    assert config(options) == PoolConfig(**options)


@pytest.mark.parametrize("mode", ["rollback", "commit", "discard", None])
def test_reset_modes(mode: str | None) -> None:
    assert config({"reset_on_return": mode}).reset_on_return == mode


@pytest.mark.parametrize(
    ("health_checks", "options", "expected"),
    [
        (False, {}, 0.5),
        (True, {}, True),
        (True, {"pre_ping": False}, False),
        (False, {"pre_ping": True}, True),
        (True, {"pre_ping": 2}, 2),
        (False, {"pre_ping": 0.1}, 0.1),
    ],
)
def test_pre_ping_follows_conn_health_checks_unless_set(
    health_checks: bool, options: dict[str, Any], expected: bool | float
) -> None:
    pre_ping = config(options, CONN_HEALTH_CHECKS=health_checks).pre_ping
    assert pre_ping == expected
    assert type(pre_ping) is type(expected)


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
        ("timeout", float("inf"), "a number of seconds > 0"),
        ("timeout", "30", "a number of seconds > 0"),
        ("recycle", 0, "a number of seconds > 0, or -1 to never recycle"),
        ("recycle", -5, "a number of seconds > 0, or -1 to never recycle"),
        ("pre_ping", 0, PRE_PING_ALLOWED),
        ("pre_ping", -1, PRE_PING_ALLOWED),
        ("pre_ping", float("nan"), PRE_PING_ALLOWED),
        ("pre_ping", "yes", PRE_PING_ALLOWED),
        ("pre_ping", None, PRE_PING_ALLOWED),
        ("use_lifo", None, "True or False"),
        ("reset_on_return", "DISCARD", "one of 'rollback', 'commit', 'discard', None"),
        ("reset_on_return", True, "one of 'rollback', 'commit', 'discard', None"),
        ("reset_on_return", False, "one of 'rollback', 'commit', 'discard', None"),
        (
            "recycle_jitter",
            1,
            "a fraction from 0 (no jitter) up to, not including, 1",
        ),
        (
            "recycle_jitter",
            -0.1,
            "a fraction from 0 (no jitter) up to, not including, 1",
        ),
        ("leak_timeout", 0, "a number of seconds > 0, or None to not watch for leaks"),
        (
            "leak_timeout",
            "5",
            "a number of seconds > 0, or None to not watch for leaks",
        ),
        ("prewarm", -1, "an integer >= 0"),
        (
            "unreachable_wait",
            -1,
            "a number of seconds >= 0, or None to let every checkout try to connect",
        ),
        ("ping_timeout", 0, "a number of seconds > 0, or None for no limit"),
        ("prewarm", 1.0, "an integer >= 0"),
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
        "Valid keys: leak_timeout, max_overflow, ping_timeout, pool_size, pre_ping, "
        "prewarm, recycle, recycle_jitter, reset_on_return, timeout, "
        "unreachable_wait, use_lifo." in message
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


def test_prewarm_cannot_exceed_pool_size() -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        config({"pool_size": 2, "prewarm": 3})
    message = str(excinfo.value)
    assert "DATABASES['orders']['OPTIONS']['sapool']['prewarm']" in message
    assert "pool_size (2)" in message


# Property-based: whatever a settings file holds, the answer is a PoolConfig
# that means exactly what was given, or ImproperlyConfigured naming a key.

KEYS = [field.name for field in fields(PoolConfig)]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["rollback", "commit", "discard", "ROLLBACK", "", "5"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
VALID_VALUE = {
    "pool_size": st.integers(1, 100),
    "max_overflow": st.integers(-1, 100),
    "timeout": st.floats(0.001, 1e6) | st.integers(1, 10**6),
    "recycle": st.just(-1) | st.floats(0.001, 1e6) | st.integers(1, 10**6),
    "pre_ping": st.booleans() | st.floats(0.001, 1e6) | st.integers(1, 10**6),
    "reset_on_return": st.sampled_from(["rollback", "commit", "discard", None]),
    "use_lifo": st.booleans(),
    "recycle_jitter": st.floats(0, 0.999) | st.just(0),
    "leak_timeout": st.none() | st.floats(0.001, 1e6) | st.integers(1, 10**6),
    "prewarm": st.integers(0, 1),
    "unreachable_wait": st.none() | st.floats(0, 1e6) | st.integers(0, 10**6),
    "ping_timeout": st.none() | st.floats(0.001, 1e6) | st.integers(1, 10**6),
}
assert set(VALID_VALUE) == set(KEYS)


def is_valid(key: str, value: Any, given: dict[str, Any]) -> bool:
    """The documented range of each option, written out independently."""
    integer = isinstance(value, int) and not isinstance(value, bool)
    number = (integer or isinstance(value, float)) and math.isfinite(value)
    if key == "pool_size":
        return integer and value >= 1
    if key == "max_overflow":
        return integer and value >= -1
    if key == "timeout":
        return number and value > 0
    if key == "recycle":
        return number and (value > 0 or value == -1)
    if key == "pre_ping":
        return isinstance(value, bool) or (number and value > 0)
    if key == "use_lifo":
        return isinstance(value, bool)
    if key == "reset_on_return":
        return value in ("rollback", "commit", "discard", None)
    if key == "recycle_jitter":
        return number and 0 <= value < 1
    if key == "leak_timeout":
        return value is None or (number and value > 0)
    if key == "unreachable_wait":
        return value is None or (number and value >= 0)
    if key == "ping_timeout":
        return value is None or (number and value > 0)
    assert key == "prewarm"
    size = given.get("pool_size", 5)
    limit = size if is_valid("pool_size", size, {}) else float("inf")
    return integer and 0 <= value <= limit


PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(st.dictionaries(st.sampled_from(KEYS), ANY_VALUE, max_size=5))
def test_any_options_give_a_faithful_config_or_name_the_key(
    options: dict[str, Any],
) -> None:
    wrong = [key for key, value in options.items() if not is_valid(key, value, options)]
    if wrong:
        with pytest.raises(ImproperlyConfigured) as excinfo:
            config(options)
        assert any(f"[{key!r}]" in str(excinfo.value) for key in wrong), options
        return
    result = config(options)
    for key, value in options.items():
        assert getattr(result, key) == value, (key, value)


@PROPERTY
@given(st.fixed_dictionaries({}, optional=VALID_VALUE))
def test_valid_options_never_fail(options: dict[str, Any]) -> None:
    result = config(options)
    for key, value in options.items():
        assert getattr(result, key) == value


@PROPERTY
@given(st.text(min_size=1, max_size=20).filter(lambda k: k not in KEYS), ANY_VALUE)
def test_unknown_keys_are_named(key: str, value: Any) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        config({key: value})
    assert repr(key) in str(excinfo.value)


# Pool options put where nothing reads them.


@pytest.mark.parametrize("key", sorted(MISPLACED_KEYS))
def test_a_pool_option_at_the_top_of_options_names_the_right_place(key: str) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        PoolConfig.from_settings("orders", {"CONN_MAX_AGE": 0, "OPTIONS": {key: 3}})
    assert str(excinfo.value) == (
        f"DATABASES['orders']['OPTIONS'][{key!r}] is a pool option, not a driver "
        f"option: put it in OPTIONS['sapool'], as in 'OPTIONS': {{'sapool': "
        f"{{{key!r}: 3}}}}."
    )


def test_several_misplaced_pool_options_are_named_together() -> None:
    options = {"sslmode": "require", "pool_size": 10, "max_overflow": 0}
    with pytest.raises(ImproperlyConfigured) as excinfo:
        PoolConfig.from_settings("orders", {"CONN_MAX_AGE": 0, "OPTIONS": options})
    assert str(excinfo.value) == (
        "DATABASES['orders']['OPTIONS']['pool_size'], ['max_overflow'] are pool "
        "options, not driver options: put them in OPTIONS['sapool'], as in "
        "'OPTIONS': {'sapool': {'pool_size': 10, 'max_overflow': 0}}."
    )


def test_driver_options_named_like_ours_stay_at_the_top() -> None:
    assert DRIVER_OPTIONS.isdisjoint(MISPLACED_KEYS)
    assert {field.name for field in fields(PoolConfig)} == MISPLACED_KEYS
    options = {"connect_timeout": 5, "sslmode": "require", "sapool": {"timeout": 2}}
    settings_dict = {"CONN_MAX_AGE": 0, "OPTIONS": options}
    assert PoolConfig.from_settings("orders", settings_dict).timeout == 2


@pytest.mark.psycopg3
def test_no_misplaced_key_is_a_libpq_connection_option() -> None:
    from psycopg import pq

    keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    assert "connect_timeout" in keywords
    assert keywords.isdisjoint(MISPLACED_KEYS)


def test_django_db_connection_pools_pool_options_are_translated() -> None:
    settings_dict = {
        "CONN_MAX_AGE": 0,
        "OPTIONS": {},
        "POOL_OPTIONS": {
            "POOL_SIZE": 10,
            "MAX_OVERFLOW": 20,
            "RECYCLE": 3600,
            "TIMEOUT": 5,
            "PRE_PING": True,
            "ECHO": False,
        },
    }
    with pytest.raises(ImproperlyConfigured) as excinfo:
        PoolConfig.from_settings("orders", settings_dict)
    assert str(excinfo.value) == (
        "DATABASES['orders']['POOL_OPTIONS'] is django-db-connection-pool's "
        "setting, which django_sapool does not read: remove it and put the pool "
        "options in DATABASES['orders']['OPTIONS']['sapool'], as in 'OPTIONS': "
        "{'sapool': {'pool_size': 10, 'max_overflow': 20, 'recycle': 3600, "
        "'timeout': 5, 'pre_ping': True}} (POOL_SIZE->pool_size, "
        "MAX_OVERFLOW->max_overflow, RECYCLE->recycle, TIMEOUT->timeout, "
        "PRE_PING->pre_ping); no equivalent for 'ECHO'."
    )


@pytest.mark.parametrize("value", [None, {}])
def test_an_empty_pool_options_changes_nothing(value: Any) -> None:
    settings_dict = {"CONN_MAX_AGE": 0, "OPTIONS": {}, "POOL_OPTIONS": value}
    assert PoolConfig.from_settings("orders", settings_dict) == PoolConfig()
