"""Read ``DATABASES[alias]["OPTIONS"]["sapool"]`` into a validated PoolConfig.

Every configuration rule and every message lives here, so a mistake is reported
the same way wherever it is found: as ``ImproperlyConfigured`` naming the alias,
the key and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

#: Our key in OPTIONS. Never "pool": Django 5.1+ owns that name.
OPTIONS_KEY = "sapool"

ResetMode = Literal["rollback", "commit", "discard"] | None
RESET_MODES: tuple[ResetMode, ...] = ("rollback", "commit", "discard", None)

#: pre_ping's default unless CONN_HEALTH_CHECKS is on: ping a connection only
#: when it sat idle in the pool at least this many seconds. Under load
#: connections come back within milliseconds and nothing is sent; a restart
#: or failover, which takes longer than this, is noticed before any request
#: sees a dead connection. HikariCP skips validation within 500 ms of use.
IDLE_PING_DEFAULT = 0.5


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Pool options of one alias; names and defaults follow SQLAlchemy's QueuePool."""

    pool_size: int = 5
    max_overflow: int = 10
    timeout: float = 30.0
    recycle: float = -1
    #: True: ping at every checkout; False: never; seconds: ping a connection
    #: that sat idle in the pool at least that long.
    pre_ping: bool | float = IDLE_PING_DEFAULT
    reset_on_return: ResetMode = "rollback"
    use_lifo: bool = False
    #: Ours: each connection's recycle age is shortened by a random fraction
    #: up to this, so connections opened together are not replaced together.
    recycle_jitter: float = 0.1
    #: Ours: warn, with the borrower's stack, about a connection checked out
    #: longer than this many seconds (HikariCP's leakDetectionThreshold).
    leak_timeout: float | None = None
    #: Ours: connections opened at the pool's first checkout, so the first
    #: requests after a start or a fork do not each pay for a connect.
    prewarm: int = 0
    #: Ours: after a failed connect, one checkout at a time tries to connect;
    #: the others wait for its outcome up to this many seconds, then fail with
    #: ServerUnavailable (see _gate.py). None: every checkout tries itself.
    unreachable_wait: float | None = 2.0
    #: Ours: the longest the pool's own round trips (pre-ping, reset on
    #: checkin, the check after an error) may take before the connection is
    #: cut and discarded (see _watchdog.py). None: no limit.
    ping_timeout: float | None = 10.0

    @property
    def pool_max(self) -> int:
        """Most connections open at once; -1 when max_overflow=-1 (no limit)."""
        if self.max_overflow == -1:
            return -1
        return self.pool_size + self.max_overflow

    @classmethod
    def from_settings(cls, alias: str, settings_dict: Mapping[str, Any]) -> PoolConfig:
        """Validate one alias's settings; raise ImproperlyConfigured on any mistake."""
        where = f"DATABASES[{alias!r}]"
        options = settings_dict.get("OPTIONS") or {}
        check_not_django_pool(alias, options)
        check_misplaced_options(alias, settings_dict)
        max_age = settings_dict.get("CONN_MAX_AGE", 0)
        if max_age != 0:
            raise ImproperlyConfigured(
                f"{where}['CONN_MAX_AGE'] must be 0 with a django_sapool ENGINE, "
                f"not {max_age!r}: the pool keeps connections open and Django "
                "gives them back at the end of each request."
            )
        given = options.get(OPTIONS_KEY, {})
        if not isinstance(given, Mapping):
            raise ImproperlyConfigured(
                f"{where}['OPTIONS'][{OPTIONS_KEY!r}] must be a dict of pool "
                f"options, not {given!r}."
            )
        # CONN_HEALTH_CHECKS asks Django to check every request's connection:
        # a ping at each checkout. Without it, only idle connections are.
        health_checks = bool(settings_dict.get("CONN_HEALTH_CHECKS", False))
        values: dict[str, Any] = {
            "pre_ping": True if health_checks else IDLE_PING_DEFAULT
        }
        for key, value in given.items():
            rule = _RULES.get(key)
            if rule is None:
                raise ImproperlyConfigured(_unknown_key_message(where, key))
            check, allowed = rule
            if not check(value):
                raise ImproperlyConfigured(
                    f"{where}['OPTIONS'][{OPTIONS_KEY!r}][{key!r}] must be "
                    f"{allowed}, not {value!r}."
                )
            values[key] = value
        config = cls(**values)
        if config.prewarm > config.pool_size:
            raise ImproperlyConfigured(
                f"{where}['OPTIONS'][{OPTIONS_KEY!r}]['prewarm'] must be at most "
                f"pool_size ({config.pool_size}), not {config.prewarm!r}: the pool "
                "keeps no more than pool_size connections open."
            )
        return config


def check_not_django_pool(alias: str, options: Mapping[str, Any]) -> None:
    """Refuse Django's own pool: two pools would fight over each connection.

    A false OPTIONS["pool"] only says "not Django's pool", as Django reads it.
    """
    if options.get("pool"):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] is Django's own connection "
            "pool and cannot be combined with a django_sapool ENGINE; remove it "
            f"and configure the pool in OPTIONS[{OPTIONS_KEY!r}] instead."
        )


#: Driver options whose names look like ours: they stay at OPTIONS' top level.
DRIVER_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout"})

#: django-db-connection-pool's POOL_OPTIONS keys and ours (its keys are
#: QueuePool's arguments in capitals, as ours are in lower case).
_DBCP_KEYS = {
    "POOL_SIZE": "pool_size",
    "MAX_OVERFLOW": "max_overflow",
    "RECYCLE": "recycle",
    "TIMEOUT": "timeout",
    "PRE_PING": "pre_ping",
    "USE_LIFO": "use_lifo",
    "RESET_ON_RETURN": "reset_on_return",
}


def check_misplaced_options(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Refuse pool options put where nothing reads them.

    Pool options at OPTIONS' top level would reach the driver, which refuses
    them (``invalid connection option "pool_size"``); django-db-connection-pool's
    ``POOL_OPTIONS`` would be silently ignored.
    """
    where = f"DATABASES[{alias!r}]"
    options = settings_dict.get("OPTIONS") or {}
    misplaced = [key for key in options if key in MISPLACED_KEYS]
    if misplaced:
        names = ", ".join(f"[{key!r}]" for key in misplaced)
        what, it = (
            ("is a pool option, not a driver option", "it")
            if len(misplaced) == 1
            else ("are pool options, not driver options", "them")
        )
        moved = {key: options[key] for key in misplaced}
        raise ImproperlyConfigured(
            f"{where}['OPTIONS']{names} {what}: put {it} in OPTIONS"
            f"[{OPTIONS_KEY!r}], as in 'OPTIONS': {{{OPTIONS_KEY!r}: {moved!r}}}."
        )
    legacy = settings_dict.get("POOL_OPTIONS")
    if legacy:
        raise ImproperlyConfigured(_pool_options_message(where, legacy))


def _pool_options_message(where: str, legacy: object) -> str:
    message = (
        f"{where}['POOL_OPTIONS'] is django-db-connection-pool's setting, which "
        f"django_sapool does not read: remove it and put the pool options in "
        f"{where}['OPTIONS'][{OPTIONS_KEY!r}]"
    )
    if not isinstance(legacy, Mapping):
        return message + "."
    ours = {
        _DBCP_KEYS[key]: value for key, value in legacy.items() if key in _DBCP_KEYS
    }
    mapping = ", ".join(
        f"{key}->{_DBCP_KEYS[key]}" for key in legacy if key in _DBCP_KEYS
    )
    others = [key for key in legacy if key not in _DBCP_KEYS]
    if ours:
        message += f", as in 'OPTIONS': {{{OPTIONS_KEY!r}: {ours!r}}} ({mapping})"
    if others:
        message += f"; no equivalent for {', '.join(repr(key) for key in others)}"
    return message + "."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A real, finite number: an infinite timeout would be a hang."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "pool_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_overflow": (
        lambda v: _is_int(v) and v >= -1,
        "an integer >= 0, or -1 for no limit",
    ),
    "timeout": (lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
    "recycle": (
        lambda v: _is_number(v) and (v > 0 or v == -1),
        "a number of seconds > 0, or -1 to never recycle",
    ),
    "pre_ping": (
        lambda v: isinstance(v, bool) or (_is_number(v) and v > 0),
        "True (ping at every checkout), False (never), or a number of seconds "
        "> 0 (ping a connection idle in the pool at least that long)",
    ),
    "reset_on_return": (
        lambda v: v in RESET_MODES,
        "one of " + ", ".join(repr(mode) for mode in RESET_MODES),
    ),
    "use_lifo": (lambda v: isinstance(v, bool), "True or False"),
    "recycle_jitter": (
        lambda v: _is_number(v) and 0 <= v < 1,
        "a fraction from 0 (no jitter) up to, not including, 1",
    ),
    "leak_timeout": (
        lambda v: v is None or (_is_number(v) and v > 0),
        "a number of seconds > 0, or None to not watch for leaks",
    ),
    "prewarm": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "unreachable_wait": (
        lambda v: v is None or (_is_number(v) and v >= 0),
        "a number of seconds >= 0, or None to let every checkout try to connect",
    ),
    "ping_timeout": (
        lambda v: v is None or (_is_number(v) and v > 0),
        "a number of seconds > 0, or None for no limit",
    ),
}
assert set(_RULES) == {field.name for field in fields(PoolConfig)}

#: Pool options that, found at OPTIONS' top level, were meant for OPTIONS["sapool"].
MISPLACED_KEYS = frozenset(_RULES) - DRIVER_OPTIONS


def _unknown_key_message(where: str, key: object) -> str:
    valid = sorted(_RULES)
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, valid, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return (
        f"{where}['OPTIONS'][{OPTIONS_KEY!r}] has an unknown key {key!r}.{hint} "
        f"Valid keys: {', '.join(valid)}."
    )
