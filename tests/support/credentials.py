"""What the credential tests (tests/test_credentials.py) stand on.

The application's login with password authentication and an administrator
who changes its password (``Account``); on PostgreSQL, whose test server
trusts every login, a private cluster made to ask for passwords
(``scram_logins``); requests from several threads and what each saw
(``Traffic``); a stand-in token service (``StandInTokens``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import Error as DatabaseError

from django_sapool import _registry
from tests.support.pool_alias import PoolAlias
from tests.support.private_server import PrivatePostgres
from tests.support.server import VENDOR, Observer, backend_id, create_login

#: MariaDB: one user per run (dropped afterwards); PostgreSQL: the private
#: cluster's role.
USER = "sapool_rotate" if VENDOR == "postgresql" else f"sapool_rot_{os.getpid()}"
FIRST_PASSWORD = "rotation-0-initial"


@dataclass
class Account:
    """A login with password authentication, and an administrator's view of it."""

    settings: dict[str, str]  # HOST, PORT, NAME, USER, PASSWORD
    admin: Observer
    #: The admin connection is shared by the threads that mint tokens.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # The token source changes the password from the threads that connect.
        self.admin.wrapper.inc_thread_sharing()

    def set_password(self, password: str) -> None:
        """Make the server accept ``password`` (and no other) from now on."""
        with self.lock:
            self._set_password(password)

    def _set_password(self, password: str) -> None:
        if VENDOR == "postgresql":
            self.admin.rows(f"ALTER ROLE {USER} PASSWORD '{password}'")
        else:
            self.admin.rows(
                f"ALTER USER '{USER}'@'{self.host}' IDENTIFIED BY '{password}'"
            )

    @property
    def host(self) -> str:
        return self.settings["HOST"] or "localhost"

    def sessions(self, observer: Observer | None = None) -> set[int]:
        """The server sessions of this login now."""
        observer = observer or self.admin
        if VENDOR == "postgresql":
            sql = "SELECT pid FROM pg_stat_activity WHERE usename = %s"
        else:
            sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s"
        return {int(row[0]) for row in observer.rows(sql, [USER])}

    @property
    def admin_settings(self) -> dict[str, Any]:
        settings = self.admin.wrapper.settings_dict
        return {
            key: settings[key] for key in ("HOST", "PORT", "NAME", "USER", "PASSWORD")
        }

    def refuses(self, password: str) -> bool:
        """Proof that logins really authenticate: a wrong password is refused."""
        try:
            Observer(**{**self.settings, "PASSWORD": password}).close()
        except DatabaseError:
            return True
        return False


def scram_logins(private: PrivatePostgres) -> None:
    """Make a private cluster's TCP logins, but the administrator's, prove
    their password (scram-sha-256), and give it the ``USER`` role."""
    admin = Observer(**private.settings)
    try:
        create_login(admin, USER, FIRST_PASSWORD)
        # The administrator stays trusted (the observer has no password).
        (private.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        admin.rows("SELECT pg_reload_conf()")
    finally:
        admin.close()


def pools_of(alias: PoolAlias) -> int:
    """How many pools the alias has: one, whatever its credentials."""
    return sum(pool.alias == alias.name for pool in _registry.pools())


@dataclass
class Traffic:
    """Requests of several threads: what each saw and when."""

    #: (when the request began, its session)
    served: list[tuple[float, int]] = field(default_factory=list)
    failed: list[tuple[float, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def requests(self, alias: PoolAlias) -> Callable[[], None]:
        def run() -> None:
            # Every thread's wrapper reads the alias's one settings dict, as
            # with Django's: a change in place reaches them all.
            wrapper = alias.wrapper(shared=True)
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    session = backend_id(wrapper)
                except DatabaseError as exc:
                    self.failed.append((began, time.monotonic(), repr(exc)))
                else:
                    self.served.append((began, session))
                finally:
                    wrapper.close()  # request_finished: back to the pool
                time.sleep(0.002)

        return run


def sessions_since(traffic: Traffic, since: float, known: set[int]) -> set[int]:
    """Sessions new to ``known`` that served a request begun after ``since``."""
    return {s for when, s in list(traffic.served) if when > since} - known


def served_across_rotations(
    served: list[tuple[float, int]], windows: list[tuple[float, float]]
) -> int:
    """Sessions that served a request before a rotation began and after it ended."""
    kept = set()
    for start, done in windows:
        before = {s for when, s in served if when < start}
        after = {s for when, s in served if when > done}
        kept |= before & after
    return len(kept)


class StandInTokens:
    """Mints counter-based tokens, each made the account's password at once.

    A real token service accepts every unexpired token; this stand-in's server
    accepts only the newest, so a connect must follow its mint without
    another mint in between (the wrapper holds ``connecting`` around both).
    """

    def __init__(self, account: Account) -> None:
        self.account = account
        self.counter = itertools.count(1)
        self.minted: list[str] = []
        self.connecting = threading.Lock()

    def mint(self) -> str:
        token = f"token-{next(self.counter)}-{time.monotonic_ns()}"
        self.account.set_password(token)
        self.minted.append(token)
        return token
