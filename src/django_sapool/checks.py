"""System checks: report pool misconfiguration at startup, before any connection.

The same rules raise ImproperlyConfigured at connect time (config.py); as
checks they show up in ``manage.py check`` and at ``runserver``/``migrate``,
all aliases at once, with ids that can be looked up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from .config import (
    MISPLACED_KEYS,
    OPTIONS_KEY,
    PoolConfig,
    check_misplaced_options,
    check_not_django_pool,
)

ENGINE_PREFIX = "django_sapool.backends."
#: The README's reference of OPTIONS["sapool"].
CONFIGURATION_URL = "https://github.com/django-sapool/django-sapool#configuration"


def pooled_aliases() -> list[str]:
    """Aliases whose ENGINE is one of ours."""
    return [
        alias
        for alias, settings_dict in connections.settings.items()
        if str(settings_dict.get("ENGINE", "")).startswith(ENGINE_PREFIX)
    ]


@checks.register("django_sapool")
def check_pool_settings(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001: CONN_MAX_AGE; E002: Django's own pool; E003: OPTIONS["sapool"];
    E004: pool options outside OPTIONS["sapool"]."""
    errors: list[checks.CheckMessage] = []
    for alias in pooled_aliases():
        errors += settings_errors(alias, connections.settings[alias])
    return errors


def settings_errors(
    alias: str, settings_dict: Mapping[str, Any]
) -> list[checks.CheckMessage]:
    """Every pool configuration mistake of one alias, one message each."""
    errors: list[checks.CheckMessage] = []
    options = dict(settings_dict.get("OPTIONS") or {})
    max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if max_age != 0:
        errors.append(
            checks.Error(
                f"DATABASES[{alias!r}]['CONN_MAX_AGE'] is {max_age!r}; a "
                "django_sapool ENGINE needs 0.",
                hint="The pool keeps connections open; Django gives each back "
                "at the end of the request. Set CONN_MAX_AGE to 0.",
                id="django_sapool.E001",
            )
        )
    try:
        check_not_django_pool(alias, options)
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="django_sapool.E002"))
    options.pop("pool", None)
    try:
        check_misplaced_options(alias, settings_dict)
    except ImproperlyConfigured as exc:
        errors.append(
            checks.Error(
                str(exc),
                hint=f"Pool options go in OPTIONS[{OPTIONS_KEY!r}]; see "
                f"{CONFIGURATION_URL}",
                id="django_sapool.E004",
            )
        )
    options = {k: v for k, v in options.items() if k not in MISPLACED_KEYS}
    try:
        PoolConfig.from_settings(
            alias,
            {
                **settings_dict,
                "CONN_MAX_AGE": 0,
                "OPTIONS": options,
                "POOL_OPTIONS": None,
            },
        )
    except ImproperlyConfigured as exc:
        errors.append(
            checks.Error(
                str(exc),
                hint=f"The options of OPTIONS[{OPTIONS_KEY!r}] and their allowed "
                f"values: {CONFIGURATION_URL}",
                id="django_sapool.E003",
            )
        )
    return errors
