"""The connect_timeout a new connection gets when the settings name none.

A stalled server must not hang a worker in ``connect()`` for minutes, so the
pool gives the driver a default. libpq has sources of its own, though: the
``PGCONNECT_TIMEOUT`` environment variable and a service file entry. A value
there is the operator's choice and must win, as it does with Django's stock
backend, so the default is only added when neither sets one.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Seconds; the same for libpq and the MySQL client library.
DEFAULT_CONNECT_TIMEOUT = 10


def default_for(vendor: str, params: Mapping[str, Any]) -> int | None:
    """The connect_timeout to add to ``params``; None to leave them alone."""
    if "connect_timeout" in params:
        return None
    if vendor == "postgresql" and _libpq_sets_connect_timeout(params):
        return None
    return DEFAULT_CONNECT_TIMEOUT


def probe_limit(vendor: str, params: Mapping[str, Any]) -> float:
    """How long a connect attempt may take before the gate presumes it lost.

    The effective connect_timeout (libpq's own when it sets one, which we
    cannot read back: then our default) plus a margin.
    """
    given = params.get("connect_timeout") or default_for(vendor, params)
    try:
        seconds = float(given or DEFAULT_CONNECT_TIMEOUT)
    except (TypeError, ValueError):
        seconds = DEFAULT_CONNECT_TIMEOUT
    return max(seconds, 2.0) + 1.0


def _libpq_sets_connect_timeout(params: Mapping[str, Any]) -> bool:
    if os.environ.get("PGCONNECT_TIMEOUT"):
        return True
    service = params.get("service") or os.environ.get("PGSERVICE")
    if not service:
        return False
    # libpq reads the user's service file first, then the system one.
    for path in _service_files():
        section = _service_section(path, str(service))
        if section is not None:
            return "connect_timeout" in section
    return False


def _service_files() -> list[Path]:
    user = os.environ.get("PGSERVICEFILE") or str(Path("~/.pg_service.conf"))
    sysconfdirs = [os.environ["PGSYSCONFDIR"]] if "PGSYSCONFDIR" in os.environ else []
    # Where Debian's and most builds' libpq look without PGSYSCONFDIR.
    sysconfdirs += ["/etc/postgresql-common", "/etc/postgresql", "/etc"]
    files = [Path(user).expanduser()]
    files += [Path(d) / "pg_service.conf" for d in sysconfdirs]
    return files


def _service_section(path: Path, service: str) -> Mapping[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text())
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    return parser[service] if parser.has_section(service) else None
