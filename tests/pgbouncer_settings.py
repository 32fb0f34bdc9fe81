"""The test settings as a user behind PgBouncer must change them.

python -m tests.support.behind_pgbouncer runs the suite with these settings. In
transaction pool mode a server-side (named) cursor lives in one server session
while the next FETCH may run on another, so Django must not use them. psycopg
3 needs nothing more here: Django's default cursors bind parameters on the
client and never prepare statements (see docs/pgbouncer.md).
"""

from __future__ import annotations

import os
from typing import Any

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

POOL_MODE = os.environ.get("SAPOOL_PGBOUNCER_POOL_MODE", "transaction")

default: dict[str, Any] = DATABASES["default"]
if POOL_MODE == "transaction":
    default["DISABLE_SERVER_SIDE_CURSORS"] = True
