"""Tests of Django's own suite that fail with django_sapool's ENGINE and not
with Django's, each with the reason. Keep this short: every entry is a place
where we knowingly differ from the stock backend.

Keys of EXPECTED: "all", a vendor ("postgresql", "mysql") or a driver
("psycopg", "psycopg2", "mysqlclient"); values map test ids, as unittest
reports them, to the reason.
"""

from __future__ import annotations

_PERSISTENT = (
    "runs with CONN_MAX_AGE=None (persistent connections), which a pooled ENGINE "
    "refuses with ImproperlyConfigured: the pool keeps connections and Django gives "
    "them back per request. Health checks are pre_ping here (tests/test_health.py)."
)
_DJANGO_POOL = (
    "tests Django's own psycopg pool (OPTIONS['pool'] true), which a django_sapool "
    "ENGINE refuses with ImproperlyConfigured: two pools cannot share a connection."
)

EXPECTED: dict[str, dict[str, str]] = {
    "all": {
        f"backends.base.test_base.ConnectionHealthChecksTests.{name}": _PERSISTENT
        for name in (
            "test_health_checks_disabled",
            "test_health_checks_enabled",
            "test_health_checks_enabled_errors_occurred",
            "test_set_autocommit_health_checks_enabled",
        )
    },
    "postgresql": {
        f"backends.postgresql.tests.Tests.{name}": _DJANGO_POOL
        for name in (
            "test_connect_pool",
            "test_connect_pool_set_to_true",
            "test_connect_pool_with_timezone",
            "test_pooling_health_checks",
            # Expects Django's "Pooling doesn't support persistent connections."
            "test_pooling_not_support_persistent_connections",
        )
    },
    "psycopg2": {
        (
            "backends.postgresql.tests.Tests."
            "test_connect_pool_setting_ignored_for_psycopg2"
        ): (
            "expects Django's own message for OPTIONS['pool'] on psycopg2 ('Database "
            "pooling requires psycopg >= 3'); a django_sapool ENGINE raises its own "
            "ImproperlyConfigured first, naming the alias and the key, on every driver."
        ),
    },
    "mysql": {},
}
