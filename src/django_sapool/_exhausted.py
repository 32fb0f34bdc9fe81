"""What an exhausted pool says: its sizes, and who holds its connections."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from . import _fork
from ._record_keys import BORROWED

if TYPE_CHECKING:
    from sqlalchemy.pool import QueuePool

    from .config import PoolConfig


def exhausted_message(
    alias: str, config: PoolConfig, pool: QueuePool, waited: float
) -> str:
    """PoolTimeout's message: enough to see which setting or thread to look at."""
    return (
        f"No connection available for database alias {alias!r} after "
        f"waiting {waited:.2f} s (timeout={config.timeout:g}): "
        f"pool_size={config.pool_size}, max_overflow={config.max_overflow}, "
        f"{pool.checkedout()} checked out{_holders(pool)}. Raise "
        "pool_size/max_overflow, lower threads per process, or give idle "
        "connections back (django_sapool.close_idle_connections)."
    )


def _holders(pool: QueuePool) -> str:
    """Which threads hold the pool's connections, and for how long: the
    longest first (an executor thread keeping an idle one, say)."""
    now = time.monotonic()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    held = []
    for ref in list(_fork.lent.values()):
        loan = ref()
        if loan is None or loan.pool is not pool:
            continue
        ident, since = loan.info.get(BORROWED, (None, now))
        name = names.get(ident, "an ended thread")
        held.append((now - since, name))
    if not held:
        return ""
    held.sort(reverse=True)
    shown = ", ".join(f"{name!r} for {age:.1f} s" for age, name in held[:5])
    more = f" and {len(held) - 5} more" if len(held) > 5 else ""
    return f", held by {shown}{more}"
